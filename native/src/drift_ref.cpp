// Drift references: built from the tuning text's tokens, calibrated on held-out windows, saved
// to and loaded from a small file (untrusted input when read back). See finllm_edge.h.
//
// File layout (little-endian):
//   char   magic[8]            "FEDRIFT\0"
//   uint32 version             kVersion
//   uint32 header_size         kHeaderSize
//   char   tokenizer_sha256[64]
//   uint32 n_vocab, n_buckets, n_named, window_tokens
//   double smoothing, watch_threshold, drift_threshold, watch_rate, drift_rate
//   uint64 n_ref_tokens, n_calibration_windows, calibration_seed
//   int32  named[n_named]
//   double probs[n_buckets]
//   uint8  sha256[32]          over everything above
#include "drift.h"
#include "internal.h"
#include "le_bytes.h"
#include "sha256.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

constexpr char kMagic[8] = {'F', 'E', 'D', 'R', 'I', 'F', 'T', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 8 + 4 + 4 + 64 + 4 * 4 + 8 * 5 + 8 * 3;  // 160
constexpr int32_t kMaxBuckets = 65536, kMinWindow = 16, kMaxWindow = 1 << 20;
constexpr int32_t kMaxVocab = 1 << 22;

using fe::get32;
using fe::get64;
using fe::put32;
using fe::put64;

void putf64(std::vector<uint8_t> &b, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    put64(b, v);
}
double getf64(const uint8_t *p) {
    uint64_t v = get64(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

bool is_hex64(const std::string &s) {
    if (s.size() != 64) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

fe_status check_params(const fe_drift_params &p, const char *what) {
    if (p.n_buckets < 2 || p.n_buckets > kMaxBuckets)
        return fe::set_error(FE_ERR_INVALID_ARG, "%s: n_buckets = %d is out of range (2..%d)", what, p.n_buckets,
                             kMaxBuckets);
    if (p.n_named < 0 || p.n_named >= p.n_buckets)
        return fe::set_error(FE_ERR_INVALID_ARG, "%s: n_named = %d is out of range (0..n_buckets-1 = %d)", what,
                             p.n_named, p.n_buckets - 1);
    if (p.window_tokens < kMinWindow || p.window_tokens > kMaxWindow)
        return fe::set_error(FE_ERR_INVALID_ARG, "%s: window_tokens = %d is out of range (%d..%d)", what,
                             p.window_tokens, kMinWindow, kMaxWindow);
    if (!std::isfinite(p.smoothing) || p.smoothing <= 0 || p.smoothing > 1e6)
        return fe::set_error(FE_ERR_INVALID_ARG, "%s: smoothing = %g is out of range (0 < a <= 1e6)", what,
                             p.smoothing);
    return FE_OK;
}

// splitmix64: the calibration stream's generator (same sequence on every platform).
uint64_t next_rand(uint64_t &x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

bool write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

fe_status bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
fe_status bad(const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fe::set_error(FE_ERR_BAD_MODEL, "drift reference '%s' refused: %s", path, msg);
}

}  // namespace

namespace fe {

void drift_ref_index(fe_drift_ref &ref) {
    const uint32_t n_named = (uint32_t)ref.params.n_named, n_hashed = (uint32_t)(ref.params.n_buckets - n_named);
    ref.bucket_of.resize((size_t)ref.n_vocab);
    for (int32_t t = 0; t < ref.n_vocab; t++)
        ref.bucket_of[(size_t)t] = (uint16_t)(n_named + ((uint32_t)t * 2654435761u) % n_hashed);
    for (uint32_t i = 0; i < n_named; i++) ref.bucket_of[(size_t)ref.named[i]] = (uint16_t)i;
    ref.log_probs.resize(ref.probs.size());
    for (size_t b = 0; b < ref.probs.size(); b++) ref.log_probs[b] = std::log(ref.probs[b]);
}

fe_status drift_ref_check(const fe_drift_ref &ref, const char *what) {
    fe_status st = check_params(ref.params, what);
    if (st != FE_OK) {
        std::string msg = fe_last_error();
        return set_error(FE_ERR_BAD_MODEL, "%s", msg.c_str());
    }
    if (!is_hex64(ref.tokenizer_sha256))
        return set_error(FE_ERR_BAD_MODEL, "%s: tokenizer_sha256 is not 64 lowercase hex digits", what);
    if (ref.n_vocab < 1 || ref.n_vocab > kMaxVocab)
        return set_error(FE_ERR_BAD_MODEL, "%s: n_vocab = %d is out of range (1..%d)", what, ref.n_vocab, kMaxVocab);
    if (ref.named.size() != (size_t)ref.params.n_named || ref.probs.size() != (size_t)ref.params.n_buckets)
        return set_error(FE_ERR_BAD_MODEL, "%s: named/probs sizes disagree with n_named/n_buckets", what);
    std::vector<int32_t> sorted = ref.named;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); i++) {
        if (sorted[i] < 0 || sorted[i] >= ref.n_vocab)
            return set_error(FE_ERR_BAD_MODEL, "%s: named token %d is outside the vocabulary (0..%d)", what, sorted[i],
                             ref.n_vocab - 1);
        if (i > 0 && sorted[i] == sorted[i - 1])
            return set_error(FE_ERR_BAD_MODEL, "%s: named token %d appears twice", what, sorted[i]);
    }
    double sum = 0;
    for (size_t b = 0; b < ref.probs.size(); b++) {
        double q = ref.probs[b];
        if (!std::isfinite(q) || q <= 0 || q > 1)
            return set_error(FE_ERR_BAD_MODEL, "%s: probs[%zu] = %g is not a probability > 0", what, b, q);
        sum += q;
    }
    if (std::fabs(sum - 1.0) > 1e-6)
        return set_error(FE_ERR_BAD_MODEL, "%s: probs sum to %.9f, not 1", what, sum);
    if (ref.n_calibration_windows > 0) {
        if (!std::isfinite(ref.watch_threshold) || !std::isfinite(ref.drift_threshold) || ref.watch_threshold < 0 ||
            ref.drift_threshold < ref.watch_threshold)
            return set_error(FE_ERR_BAD_MODEL, "%s: thresholds watch %g / drift %g are not 0 <= watch <= drift", what,
                             ref.watch_threshold, ref.drift_threshold);
        if (!(ref.drift_rate > 0 && ref.drift_rate <= ref.watch_rate && ref.watch_rate < 1))
            return set_error(FE_ERR_BAD_MODEL, "%s: false-alarm rates watch %g / drift %g are not 0 < drift <= watch < 1",
                             what, ref.watch_rate, ref.drift_rate);
    }
    return FE_OK;
}

}  // namespace fe

extern "C" {

const char *fe_drift_state_str(fe_drift_state state) {
    switch (state) {
        case FE_DRIFT_WATCH: return "watch";
        case FE_DRIFT_DRIFT: return "drift";
        default: return "none";
    }
}

fe_drift_params fe_drift_default_params(void) {
    fe_drift_params p;
    p.n_buckets = 1024;
    p.n_named = 768;
    p.window_tokens = 2048;
    p.smoothing = 0.5;
    return p;
}

fe_status fe_model_tokenizer_sha256(const fe_model *model, char hex_out[65]) {
    return fe::guard("fe_model_tokenizer_sha256", [&]() -> fe_status {
        fe::clear_error();
        if (!model || !hex_out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_model_tokenizer_sha256: NULL argument");
        fe_sha256 h;
        fe_sha256_init(&h);
        const char tag[] = "finllm-edge tokenizer v1\n";
        fe_sha256_update(&h, tag, sizeof tag - 1);
        for (const char *key : {"tokenizer.ggml.model", "tokenizer.ggml.pre"}) {
            char buf[256] = {0};
            int32_t n = llama_model_meta_val_str(model->model, key, buf, sizeof buf);
            fe_sha256_update(&h, buf, n > 0 ? strnlen(buf, sizeof buf) : 0);
            fe_sha256_update(&h, "\0", 1);
        }
        const int32_t n_vocab = llama_vocab_n_tokens(model->vocab);
        uint8_t le[4] = {(uint8_t)n_vocab, (uint8_t)(n_vocab >> 8), (uint8_t)(n_vocab >> 16), (uint8_t)(n_vocab >> 24)};
        fe_sha256_update(&h, le, 4);
        for (int32_t t = 0; t < n_vocab; t++) {
            const char *text = llama_vocab_get_text(model->vocab, t);
            uint32_t attr = (uint32_t)llama_vocab_get_attr(model->vocab, t);
            if (text) fe_sha256_update(&h, text, strlen(text));
            uint8_t tail[5] = {0, (uint8_t)attr, (uint8_t)(attr >> 8), (uint8_t)(attr >> 16), (uint8_t)(attr >> 24)};
            fe_sha256_update(&h, tail, 5);
        }
        unsigned char d[32];
        fe_sha256_final(&h, d);
        for (int i = 0; i < 32; i++) snprintf(hex_out + 2 * i, 3, "%02x", d[i]);
        return FE_OK;
    });
}

fe_status fe_drift_ref_build(const char *tokenizer_sha256, int32_t n_vocab, const int32_t *tokens, size_t n_tokens,
                             const fe_drift_params *params, fe_drift_ref **out) {
    return fe::guard("fe_drift_ref_build", [&]() -> fe_status {
        fe::clear_error();
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_build: out is NULL");
        *out = nullptr;
        fe_drift_params p = params ? *params : fe_drift_default_params();
        fe_status st = check_params(p, "fe_drift_ref_build");
        if (st != FE_OK) return st;
        if (!tokenizer_sha256 || !is_hex64(tokenizer_sha256))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_build: tokenizer_sha256 must be 64 lowercase hex "
                                                     "digits (fe_model_tokenizer_sha256)");
        if (n_vocab < 1 || n_vocab > kMaxVocab)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_build: n_vocab = %d is out of range (1..%d)",
                                 n_vocab, kMaxVocab);
        if (!tokens || n_tokens == 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_build: no tokens (the tuning text is empty?)");
        std::vector<uint64_t> counts((size_t)n_vocab, 0);
        for (size_t i = 0; i < n_tokens; i++) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_build: token %d at index %zu is outside the "
                                                         "vocabulary (0..%d)", tokens[i], i, n_vocab - 1);
            counts[(size_t)tokens[i]]++;
        }
        std::vector<int32_t> ids;
        for (int32_t t = 0; t < n_vocab; t++)
            if (counts[(size_t)t] > 0) ids.push_back(t);
        std::stable_sort(ids.begin(), ids.end(),
                         [&](int32_t a, int32_t b) { return counts[(size_t)a] > counts[(size_t)b]; });
        if ((int32_t)ids.size() > p.n_named) ids.resize((size_t)p.n_named);
        auto ref = std::make_unique<fe_drift_ref>();
        ref->tokenizer_sha256 = tokenizer_sha256;
        ref->n_vocab = n_vocab;
        p.n_named = (int32_t)ids.size();
        ref->params = p;
        ref->named = ids;
        ref->probs.assign((size_t)p.n_buckets, 0.0);
        ref->probs.resize((size_t)p.n_buckets);
        fe::drift_ref_index(*ref);  // bucket_of (log_probs are redone below)
        std::vector<double> c((size_t)p.n_buckets, 0.0);
        for (size_t i = 0; i < n_tokens; i++) c[ref->bucket_of[(size_t)tokens[i]]] += 1.0;
        const double z = (double)n_tokens + p.smoothing * p.n_buckets;
        for (size_t b = 0; b < c.size(); b++) ref->probs[b] = (c[b] + p.smoothing) / z;
        for (size_t b = 0; b < c.size(); b++) ref->log_probs[b] = std::log(ref->probs[b]);
        ref->n_ref_tokens = n_tokens;
        ref->watch_threshold = ref->drift_threshold = INFINITY;
        *out = ref.release();
        return FE_OK;
    });
}

fe_status fe_drift_ref_window_kls(const fe_drift_ref *ref, const int32_t *tokens, const int32_t *request_lens,
                                  size_t n_requests, uint64_t seed, double *kl_out, size_t n_windows) {
    return fe::guard("fe_drift_ref_window_kls", [&]() -> fe_status {
        fe::clear_error();
        if (!ref || !tokens || !request_lens || !kl_out || n_requests == 0 || n_windows == 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_window_kls: NULL argument or no requests/windows");
        std::vector<size_t> start, len;
        size_t off = 0;
        for (size_t i = 0; i < n_requests; i++) {
            if (request_lens[i] < 0)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_window_kls: request_lens[%zu] < 0", i);
            if (request_lens[i] > 0) {
                start.push_back(off);
                len.push_back((size_t)request_lens[i]);
            }
            off += (size_t)request_lens[i];
        }
        if (start.empty())
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_window_kls: every request is empty");
        fe_drift_monitor *m = nullptr;
        fe_drift_ref copy = *ref;  // an uncalibrated reference is fine here
        copy.n_calibration_windows = 0;
        fe_status st = fe_drift_monitor_new(&copy, &m);
        if (st != FE_OK) return st;
        uint64_t rng = seed;
        size_t got = 0;
        fe_drift_status ds;
        while (got < n_windows) {
            size_t k = (size_t)(next_rand(rng) % start.size());
            st = fe_drift_observe(m, tokens + start[k], len[k]);
            if (st != FE_OK) break;
            fe_drift_get_status(m, &ds);
            if (ds.n_window == ds.window_tokens) kl_out[got++] = ds.kl;
        }
        fe_drift_monitor_free(m);
        return st;
    });
}

fe_status fe_drift_ref_calibrate(fe_drift_ref *ref, const double *kls, size_t n, double watch_rate, double drift_rate,
                                 uint64_t seed) {
    return fe::guard("fe_drift_ref_calibrate", [&]() -> fe_status {
        fe::clear_error();
        if (!ref || !kls || n == 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_calibrate: NULL argument or no windows");
        if (!(drift_rate > 0 && drift_rate <= watch_rate && watch_rate < 1))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_calibrate: rates watch %g / drift %g must satisfy "
                                                     "0 < drift <= watch < 1", watch_rate, drift_rate);
        std::vector<double> v(kls, kls + n);
        for (double x : v)
            if (!std::isfinite(x) || x < 0)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_calibrate: a window KL is %g", x);
        std::sort(v.begin(), v.end());
        auto order_stat = [&](double rate) {
            double k = std::ceil((double)(n + 1) * (1.0 - rate));  // 1-based rank
            size_t i = k < 1 ? 0 : (size_t)k - 1;
            return v[std::min(i, n - 1)];
        };
        ref->watch_threshold = order_stat(watch_rate);
        ref->drift_threshold = order_stat(drift_rate);
        ref->watch_rate = watch_rate;
        ref->drift_rate = drift_rate;
        ref->n_calibration_windows = n;
        ref->calibration_seed = seed;
        return FE_OK;
    });
}

fe_status fe_drift_ref_get_info(const fe_drift_ref *ref, fe_drift_ref_info *out) {
    if (!ref || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_get_info: NULL argument");
    memset(out, 0, sizeof *out);
    snprintf(out->tokenizer_sha256, sizeof out->tokenizer_sha256, "%s", ref->tokenizer_sha256.c_str());
    out->n_vocab = ref->n_vocab;
    out->params = ref->params;
    out->watch_threshold = ref->watch_threshold;
    out->drift_threshold = ref->drift_threshold;
    out->watch_rate = ref->watch_rate;
    out->drift_rate = ref->drift_rate;
    out->n_ref_tokens = ref->n_ref_tokens;
    out->n_calibration_windows = ref->n_calibration_windows;
    out->calibration_seed = ref->calibration_seed;
    return FE_OK;
}

int32_t fe_drift_ref_bucket(const fe_drift_ref *ref, int32_t token) {
    if (!ref || token < 0 || token >= ref->n_vocab) return -1;
    return ref->bucket_of[(size_t)token];
}

fe_status fe_drift_ref_save(const fe_drift_ref *ref, const char *path) {
    return fe::guard("fe_drift_ref_save", [&]() -> fe_status {
        fe::clear_error();
        if (!ref || !path || !*path) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_save: NULL argument");
        if (ref->n_calibration_windows == 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_save: the reference is not calibrated "
                                                     "(fe_drift_ref_calibrate first)");
        fe_status st = fe::drift_ref_check(*ref, "fe_drift_ref_save");
        if (st != FE_OK) return st;
        std::vector<uint8_t> b;
        b.insert(b.end(), kMagic, kMagic + 8);
        put32(b, kVersion);
        put32(b, (uint32_t)kHeaderSize);
        b.insert(b.end(), ref->tokenizer_sha256.begin(), ref->tokenizer_sha256.end());
        put32(b, (uint32_t)ref->n_vocab);
        put32(b, (uint32_t)ref->params.n_buckets);
        put32(b, (uint32_t)ref->params.n_named);
        put32(b, (uint32_t)ref->params.window_tokens);
        for (double d : {ref->params.smoothing, ref->watch_threshold, ref->drift_threshold, ref->watch_rate,
                         ref->drift_rate})
            putf64(b, d);
        put64(b, ref->n_ref_tokens);
        put64(b, ref->n_calibration_windows);
        put64(b, ref->calibration_seed);
        for (int32_t t : ref->named) put32(b, (uint32_t)t);
        for (double q : ref->probs) putf64(b, q);
        fe_sha256 h;
        fe_sha256_init(&h);
        fe_sha256_update(&h, b.data(), b.size());
        uint8_t digest[32];
        fe_sha256_final(&h, digest);
        b.insert(b.end(), digest, digest + 32);
        std::string target = path, tmp = target + ".tmp." + std::to_string((long)getpid());
        Fd f;
        f.fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (f.fd < 0) return fe::set_error(FE_ERR_INVALID_ARG, "cannot create '%s': %s", tmp.c_str(), strerror(errno));
        bool ok = write_all(f.fd, b.data(), b.size()) && fsync(f.fd) == 0;
        int err = errno;
        ok = close(f.fd) == 0 && ok;
        f.fd = -1;
        if (!ok || rename(tmp.c_str(), target.c_str()) != 0) {
            if (ok) err = errno;
            unlink(tmp.c_str());
            return fe::set_error(FE_ERR_INVALID_ARG, "cannot write the drift reference '%s': %s", path, strerror(err));
        }
        return FE_OK;
    });
}

fe_status fe_drift_ref_load(const char *path, fe_drift_ref **out) {
    return fe::guard("fe_drift_ref_load", [&]() -> fe_status {
        fe::clear_error();
        if (!path || !*path || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_drift_ref_load: NULL argument");
        *out = nullptr;
        Fd f;
        f.fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (f.fd < 0)
            return fe::set_error(FE_ERR_FILE_NOT_FOUND, "cannot open the drift reference '%s': %s", path,
                                 strerror(errno));
        struct stat stt;
        if (fstat(f.fd, &stt) != 0 || !S_ISREG(stt.st_mode)) return bad(path, "not a regular file");
        const uint64_t size = (uint64_t)stt.st_size;
        if (size < 8) return bad(path, "%llu bytes: too short for a drift reference (truncated?)",
                                 (unsigned long long)size);
        uint8_t head[kHeaderSize];
        size_t have = (size_t)std::min<uint64_t>(size, kHeaderSize);
        if (pread(f.fd, head, have, 0) != (ssize_t)have) return bad(path, "cannot read the header");
        if (memcmp(head, kMagic, 8) != 0) return bad(path, "bad magic (not a finllm-edge drift reference)");
        if (have < kHeaderSize) return bad(path, "truncated header (%zu of %zu bytes)", have, kHeaderSize);
        uint32_t version = get32(head + 8), header_size = get32(head + 12);
        if (version != kVersion) return bad(path, "version %u is not supported (this library reads %u)", version, kVersion);
        if (header_size != kHeaderSize) return bad(path, "header_size %u, expected %zu", header_size, kHeaderSize);
        uint32_t n_vocab = get32(head + 80), n_buckets = get32(head + 84), n_named = get32(head + 88);
        if (n_vocab < 1 || n_vocab > (uint32_t)kMaxVocab) return bad(path, "n_vocab %u is out of range", n_vocab);
        if (n_buckets < 2 || n_buckets > (uint32_t)kMaxBuckets) return bad(path, "n_buckets %u is out of range", n_buckets);
        if (n_named >= n_buckets || n_named > n_vocab) return bad(path, "n_named %u is out of range", n_named);
        const uint64_t expect = kHeaderSize + 4ull * n_named + 8ull * n_buckets + 32;
        if (size != expect)
            return bad(path, "%llu bytes where n_named %u and n_buckets %u make %llu (truncated or altered)",
                       (unsigned long long)size, n_named, n_buckets, (unsigned long long)expect);
        std::vector<uint8_t> b((size_t)size);
        if (pread(f.fd, b.data(), b.size(), 0) != (ssize_t)b.size()) return bad(path, "cannot read the file");
        fe_sha256 h;
        fe_sha256_init(&h);
        fe_sha256_update(&h, b.data(), b.size() - 32);
        uint8_t digest[32];
        fe_sha256_final(&h, digest);
        if (memcmp(digest, b.data() + b.size() - 32, 32) != 0) return bad(path, "checksum mismatch (altered or corrupt)");
        auto ref = std::make_unique<fe_drift_ref>();
        const uint8_t *p = b.data();
        ref->tokenizer_sha256.assign((const char *)p + 16, 64);
        ref->n_vocab = (int32_t)n_vocab;
        ref->params.n_buckets = (int32_t)n_buckets;
        ref->params.n_named = (int32_t)n_named;
        ref->params.window_tokens = (int32_t)std::min<uint32_t>(get32(p + 92), (uint32_t)INT32_MAX);
        ref->params.smoothing = getf64(p + 96);
        ref->watch_threshold = getf64(p + 104);
        ref->drift_threshold = getf64(p + 112);
        ref->watch_rate = getf64(p + 120);
        ref->drift_rate = getf64(p + 128);
        ref->n_ref_tokens = get64(p + 136);
        ref->n_calibration_windows = get64(p + 144);
        ref->calibration_seed = get64(p + 152);
        if (ref->n_calibration_windows == 0) return bad(path, "not calibrated (n_calibration_windows is 0)");
        p += kHeaderSize;
        ref->named.resize(n_named);
        for (uint32_t i = 0; i < n_named; i++) ref->named[i] = (int32_t)get32(p + 4 * i);
        p += 4ull * n_named;
        ref->probs.resize(n_buckets);
        for (uint32_t i = 0; i < n_buckets; i++) ref->probs[i] = getf64(p + 8 * i);
        std::string what = std::string("drift reference '") + path + "' refused";
        fe_status st = fe::drift_ref_check(*ref, what.c_str());
        if (st != FE_OK) return st;
        fe::drift_ref_index(*ref);
        *out = ref.release();
        return FE_OK;
    });
}

void fe_drift_ref_free(fe_drift_ref *ref) { delete ref; }

}  // extern "C"
