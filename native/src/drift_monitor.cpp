// The drift monitor: bucket counts of a sliding window of prompt tokens and KL(window || reference),
// updated in O(1) per token; the state after each request; the state JSON; the session and
// scheduler hooks. A monitor is thread-safe (its mutex): a scheduler counts requests on the
// threads that submit them while others read the status.
//
// With smoothing a, B buckets, window counts c_b and n tokens in the window (Z = n + a*B):
//   KL = sum_b p_b log(p_b / q_b),  p_b = (c_b + a) / Z
//      = (S1 - S2) / Z - log Z,     S1 = sum_b f(c_b), f(c) = (c + a) log(c + a),  S2 = sum_b (c_b + a) log q_b
// A token entering or leaving the window changes one c_b: S1 moves by a difference of the
// precomputed f table, S2 by log q_b. S1 and S2 are recomputed exactly every kResync updates so
// that rounding cannot accumulate.
#include "drift.h"
#include "internal.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>

namespace {

constexpr size_t kHistory = 4096;        // evaluations kept for the report's chart
constexpr size_t kSampleTokens = 512;    // tokens kept per sampled request (opt-in)
constexpr int32_t kMaxSamples = 4096;
constexpr int64_t kResync = 1 << 16;
constexpr size_t kSharedPrefix = 16;     // a shared prompt prefix this long is not new text (see the header)

struct Eval {
    int64_t request, tokens;
    double kl;
    fe_drift_state state;
};

}  // namespace

struct fe_drift_monitor {
    mutable std::mutex mu;             // every public call and the hooks hold it
    fe_drift_ref ref;
    int32_t W = 0, B = 0;
    double a = 0;
    std::vector<double> f;             // f(c), c = 0..W
    std::vector<uint16_t> ring;        // buckets of the window's tokens, oldest at `head`
    size_t head = 0;
    int32_t n_window = 0;
    std::vector<uint32_t> counts;
    double s1 = 0, s2 = 0;
    int64_t updates = 0;
    fe_drift_status st{};
    std::deque<Eval> history;
    int32_t max_samples = 0, every_n = 0;
    std::deque<std::vector<int32_t>> samples;
    std::vector<int32_t> session_prev;  // the previous request's prompt (the hooks)

    void resync() {
        s1 = s2 = 0;
        for (int32_t b = 0; b < B; b++) {
            s1 += f[counts[(size_t)b]];
            s2 += ((double)counts[(size_t)b] + a) * ref.log_probs[(size_t)b];
        }
        updates = 0;
    }

    void reset() {
        head = 0;
        n_window = 0;
        counts.assign((size_t)B, 0);
        resync();
        st = fe_drift_status{};
        st.watch_threshold = ref.watch_threshold;
        st.drift_threshold = ref.drift_threshold;
        st.window_tokens = W;
        st.first_drift_request = st.first_drift_tokens = -1;
        history.clear();
        samples.clear();
        session_prev.clear();
    }

    void add(uint16_t b) {
        uint32_t &c = counts[b];
        s1 += f[c + 1] - f[c];
        s2 += ref.log_probs[b];
        c++;
    }

    void remove(uint16_t b) {
        uint32_t &c = counts[b];
        s1 += f[c - 1] - f[c];
        s2 -= ref.log_probs[b];
        c--;
    }

    void push(int32_t token) {
        uint16_t b = ref.bucket_of[(size_t)token];
        if (n_window == W) {
            remove(ring[head]);
            ring[head] = b;
            head = (head + 1) % (size_t)W;
        } else {
            ring[(head + (size_t)n_window) % (size_t)W] = b;
            n_window++;
        }
        add(b);
        if (++updates >= kResync) resync();
    }

    double kl() const {
        const double z = (double)n_window + a * B;
        return std::max(0.0, (s1 - s2) / z - std::log(z));
    }

    void observe(const int32_t *tokens, size_t n) {
        for (size_t i = 0; i < n; i++) push(tokens[i]);
        st.n_requests++;
        st.n_tokens += (int64_t)n;
        st.n_window = n_window;
        st.kl = kl();
        st.state = FE_DRIFT_NONE;
        if (n_window == W) {
            if (st.kl >= ref.drift_threshold) st.state = FE_DRIFT_DRIFT;
            else if (st.kl >= ref.watch_threshold) st.state = FE_DRIFT_WATCH;
            st.n_evaluations++;
            if (st.state != FE_DRIFT_NONE) st.n_watch++;
            if (st.state == FE_DRIFT_DRIFT) {
                st.n_drift++;
                if (st.first_drift_request < 0) {
                    st.first_drift_request = st.n_requests;
                    st.first_drift_tokens = st.n_tokens;
                }
            }
            history.push_back(Eval{st.n_requests, st.n_tokens, st.kl, st.state});
            if (history.size() > kHistory) history.pop_front();
        }
        if (max_samples > 0 && st.n_requests % every_n == 0) {
            samples.emplace_back(tokens, tokens + std::min(n, kSampleTokens));
            while (samples.size() > (size_t)max_samples) samples.pop_front();
        }
    }
};

namespace {

void append(std::string &s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void append(std::string &s, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) s.append(buf, (size_t)std::min(n, (int)sizeof buf - 1));
}

void append_num(std::string &s, double v) {
    if (std::isfinite(v)) append(s, "%.17g", v);
    else s += "null";
}

}  // namespace

namespace fe {

void drift_count_request(fe_drift_monitor *m, const fe_model *model, const std::vector<llama_token> &p,
                         const fe_chat_message *chat, size_t n_chat) {
    if (!m) return;
    std::vector<int32_t> fresh;
    if (chat) {  // a chat request: what the user asked is the last user message
        const fe_chat_message *user = nullptr;
        for (size_t i = 0; i < n_chat; i++)
            if (chat[i].role && chat[i].content && strcmp(chat[i].role, "user") == 0) user = &chat[i];
        std::vector<llama_token> toks;
        if (user && tokenize_text(model, user->content, false, false, toks) == FE_OK)
            fresh.assign(toks.begin(), toks.end());
    }
    std::lock_guard<std::mutex> lk(m->mu);
    if (!chat) {  // a prompt: skip a long prefix shared with the previous one (system prompt, chat history)
        size_t k = 0, n = std::min(p.size(), m->session_prev.size());
        while (k < n && p[k] == m->session_prev[k]) k++;
        if (k < kSharedPrefix) k = 0;
        fresh.reserve(p.size() - k);
        for (size_t i = k; i < p.size(); i++)
            if (!llama_vocab_is_control(model->vocab, p[i])) fresh.push_back(p[i]);
    }
    m->session_prev.assign(p.begin(), p.end());
    m->observe(fresh.data(), fresh.size());
}

void drift_on_request(fe_session *s) {
    if (s->req.gp.max_tokens == 0) return;
    drift_count_request(s->drift, s->model, s->req.prompt, s->req.chat, s->req.n_chat);
}

fe_status drift_monitor_for(const fe_model *model, const char *path, fe_drift_monitor **out) {
    *out = nullptr;
    fe_drift_ref *ref = nullptr;
    fe_status st = fe_drift_ref_load(path, &ref);
    if (st != FE_OK) return st;
    std::unique_ptr<fe_drift_ref, void (*)(fe_drift_ref *)> hold(ref, fe_drift_ref_free);
    char hex[65];
    st = fe_model_tokenizer_sha256(model, hex);
    if (st != FE_OK) return st;
    int32_t n_vocab = llama_vocab_n_tokens(model->vocab);
    if (ref->n_vocab != n_vocab || ref->tokenizer_sha256 != hex)
        return set_error(FE_ERR_BAD_MODEL, "drift reference '%s' refused: made for another tokenizer "
                         "(n_vocab %d, tokenizer sha256 %.12s...) than this model's (n_vocab %d, %.12s...); "
                         "make the reference with this model (finllm-edge convert --drift-ref)",
                         path, ref->n_vocab, ref->tokenizer_sha256.c_str(), n_vocab, hex);
    return fe_drift_monitor_new(ref, out);
}

void drift_detach(fe_session *s) {
    fe_drift_monitor_free(s->drift);
    s->drift = nullptr;
}

}  // namespace fe

extern "C" {

fe_status fe_drift_monitor_new(const fe_drift_ref *ref, fe_drift_monitor **out) {
    return fe::guard("fe_drift_monitor_new", [&]() -> fe_status {
        if (!ref || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_monitor_new: NULL argument");
        *out = nullptr;
        auto m = std::make_unique<fe_drift_monitor>();
        m->ref = *ref;
        m->W = ref->params.window_tokens;
        m->B = ref->params.n_buckets;
        m->a = ref->params.smoothing;
        m->f.resize((size_t)m->W + 1);
        for (int32_t c = 0; c <= m->W; c++) m->f[(size_t)c] = ((double)c + m->a) * std::log((double)c + m->a);
        m->ring.assign((size_t)m->W, 0);
        m->reset();
        *out = m.release();
        return FE_OK;
    });
}

void fe_drift_monitor_free(fe_drift_monitor *monitor) { delete monitor; }

void fe_drift_monitor_reset(fe_drift_monitor *monitor) {
    if (!monitor) return;
    std::lock_guard<std::mutex> lk(monitor->mu);
    monitor->reset();
}

fe_status fe_drift_observe(fe_drift_monitor *monitor, const int32_t *tokens, size_t n) {
    return fe::guard("fe_drift_observe", [&]() -> fe_status {
        if (!monitor || (n > 0 && !tokens)) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_observe: NULL argument");
        for (size_t i = 0; i < n; i++)
            if (tokens[i] < 0 || tokens[i] >= monitor->ref.n_vocab)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_observe: token %d at index %zu is outside the "
                                                         "vocabulary (0..%d); nothing was counted",
                                     tokens[i], i, monitor->ref.n_vocab - 1);
        std::lock_guard<std::mutex> lk(monitor->mu);
        monitor->observe(tokens, n);
        return FE_OK;
    });
}

fe_status fe_drift_monitor_set_sampling(fe_drift_monitor *monitor, int32_t max_samples, int32_t every_n) {
    if (!monitor) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_monitor_set_sampling: monitor is NULL");
    if (max_samples < 0 || max_samples > kMaxSamples || (max_samples > 0 && every_n < 1) || every_n < 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_monitor_set_sampling: max_samples = %d (0..%d) and "
                                                 "every_n = %d (>= 1 when sampling) are out of range",
                             max_samples, kMaxSamples, every_n);
    std::lock_guard<std::mutex> lk(monitor->mu);
    monitor->max_samples = max_samples;
    monitor->every_n = max_samples > 0 ? every_n : 0;
    if (max_samples == 0) monitor->samples.clear();
    while (monitor->samples.size() > (size_t)max_samples) monitor->samples.pop_front();
    return FE_OK;
}

fe_status fe_drift_get_status(const fe_drift_monitor *monitor, fe_drift_status *out) {
    if (!monitor || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_get_status: NULL argument");
    std::lock_guard<std::mutex> lk(monitor->mu);
    *out = monitor->st;
    return FE_OK;
}

char *fe_drift_monitor_json(const fe_drift_monitor *m) {
    if (!m) {
        fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_monitor_json: monitor is NULL");
        return nullptr;
    }
    try {
        std::lock_guard<std::mutex> lk(m->mu);
        const fe_drift_ref &r = m->ref;
        const fe_drift_status &st = m->st;
        std::string s = "{\"schema\":\"finllm-edge/drift-state\",\"version\":1,";
        append(s, "\"tokenizer_sha256\":\"%s\",\"state\":\"%s\",\"kl\":", r.tokenizer_sha256.c_str(),
               fe_drift_state_str(st.state));
        append_num(s, st.kl);
        s += ",\"thresholds\":{\"watch\":";
        append_num(s, r.watch_threshold);
        s += ",\"drift\":";
        append_num(s, r.drift_threshold);
        s += ",\"watch_rate\":";
        append_num(s, r.watch_rate);
        s += ",\"drift_rate\":";
        append_num(s, r.drift_rate);
        append(s, ",\"n_calibration_windows\":%" PRIu64 "},", r.n_calibration_windows);
        append(s, "\"window_tokens\":%d,\"n_window\":%d,\"n_requests\":%" PRId64 ",\"n_tokens\":%" PRId64
                  ",\"n_evaluations\":%" PRId64 ",\"n_watch\":%" PRId64 ",\"n_drift\":%" PRId64 ",",
               m->W, m->n_window, st.n_requests, st.n_tokens, st.n_evaluations, st.n_watch, st.n_drift);
        if (st.first_drift_request >= 0)
            append(s, "\"first_drift\":{\"request\":%" PRId64 ",\"tokens\":%" PRId64 "},", st.first_drift_request,
                   st.first_drift_tokens);
        else
            s += "\"first_drift\":null,";
        append(s, "\"reference\":{\"n_vocab\":%d,\"n_buckets\":%d,\"n_named\":%d,\"smoothing\":", r.n_vocab, m->B,
               r.params.n_named);
        append_num(s, m->a);
        append(s, ",\"n_ref_tokens\":%" PRIu64 ",\"named_tokens\":[", r.n_ref_tokens);
        for (size_t i = 0; i < r.named.size(); i++) append(s, i ? ",%d" : "%d", r.named[i]);
        s += "],\"probs\":[";
        for (size_t b = 0; b < r.probs.size(); b++) {
            if (b) s += ",";
            append(s, "%.9g", r.probs[b]);
        }
        s += "]},\"window_counts\":[";
        for (size_t b = 0; b < m->counts.size(); b++) append(s, b ? ",%u" : "%u", m->counts[b]);
        s += "],\"history\":[";
        bool first = true;
        for (const Eval &e : m->history) {
            append(s, "%s[%" PRId64 ",%" PRId64 ",%.9g,%d]", first ? "" : ",", e.request, e.tokens, e.kl, (int)e.state);
            first = false;
        }
        s += "],\"sampling\":";
        if (m->max_samples > 0) {
            append(s, "{\"max_samples\":%d,\"every_n\":%d},\"samples\":[", m->max_samples, m->every_n);
            first = true;
            for (const auto &smp : m->samples) {
                s += first ? "[" : ",[";
                for (size_t i = 0; i < smp.size(); i++) append(s, i ? ",%d" : "%d", smp[i]);
                s += "]";
                first = false;
            }
            s += "]}";
        } else {
            s += "null}";
        }
        char *out = static_cast<char *>(malloc(s.size() + 1));
        if (!out) {
            fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_drift_monitor_json: out of memory");
            return nullptr;
        }
        memcpy(out, s.c_str(), s.size() + 1);
        return out;
    } catch (...) {
        fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_drift_monitor_json: out of memory");
        return nullptr;
    }
}

fe_status fe_session_enable_drift(fe_session *session, const char *path) {
    return fe::guard("fe_session_enable_drift", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_enable_drift: session is NULL");
        if (session->req.active)
            return fe::set_error(FE_ERR_BUSY, "fe_session_enable_drift: a request is running; finish or end it first");
        if (!path) {
            fe::drift_detach(session);
            return FE_OK;
        }
        fe_drift_monitor *m = nullptr;
        fe_status st = fe::drift_monitor_for(session->model, path, &m);
        if (st != FE_OK) return st;
        fe::drift_detach(session);
        session->drift = m;
        return FE_OK;
    });
}

fe_drift_monitor *fe_session_drift_monitor(fe_session *session) { return session ? session->drift : nullptr; }

}  // extern "C"
