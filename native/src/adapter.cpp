// Runtime LoRA adapters (see "runtime LoRA adapters" in finllm_edge.h): load a GGUF LoRA against a
// loaded model after our own checks, attach sets of adapters to sessions, and keep prefix reuse
// and saved state honest when the set changes.
//
// An adapter file is untrusted input. In order: fe_gguf_validate_adapter_file (the container:
// counts, sizes, offsets, the type keys), then every tensor against the base model's own GGUF
// header (names, types, shapes), and only then llama_adapter_lora_init, whose own checks stay as
// a second line.
#include "internal.h"
#include "gguf_validate.h"
#include "sha256.h"

#include "ggml.h"
#include "gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <sys/stat.h>

struct fe_adapter {
    fe_model *model = nullptr;            // NULL once the model was freed (llama.cpp freed `la` then)
    llama_adapter_lora *la = nullptr;
    std::string path, name, sha256;
    int32_t n_tensors = 0, rank_max = 0;
    float alpha = 0.0f;
    uint64_t size_bytes = 0;
    double load_ms = 0.0;
    int users = 0;                        // sessions with this adapter in their active set
    bool released = false;                // fe_adapter_free was called while users > 0
};

namespace {

// Guards every fe_model::adapters list, fe_adapter::users/released, across threads.
std::mutex g_mu;

struct GgufFile {
    gguf_context *g = nullptr;
    ggml_context *meta = nullptr;
    ~GgufFile() {
        if (g) gguf_free(g);
        if (meta) ggml_free(meta);
    }
    bool open(const std::string &path) {
        gguf_init_params p;
        p.no_alloc = true;
        p.ctx = &meta;
        g = gguf_init_from_file(path.c_str(), p);
        return g != nullptr && meta != nullptr;
    }
    std::string str(const char *key) const {
        int64_t id = gguf_find_key(g, key);
        if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) return "";
        return gguf_get_val_str(g, id);
    }
};

bool ends_with(const std::string &s, const char *suffix) {
    size_t n = strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Base weights the pinned llama.cpp multiplies through build_lora_mm for llama/qwen2 blocks; a LoRA
// for anything else would be loaded and silently never applied.
bool lora_target(const std::string &base) {
    static const char *const kBlock[] = {"attn_q.weight",      "attn_k.weight",  "attn_v.weight",
                                         "attn_output.weight", "ffn_gate.weight", "ffn_up.weight",
                                         "ffn_down.weight"};
    if (base == "output.weight") return true;
    if (base.rfind("blk.", 0) != 0) return false;
    size_t dot = base.find('.', 4);
    if (dot == std::string::npos || dot == 4) return false;
    for (size_t i = 4; i < dot; i++)
        if (base[i] < '0' || base[i] > '9') return false;
    std::string rest = base.substr(dot + 1);
    for (const char *t : kBlock)
        if (rest == t) return true;
    return false;
}

fe_status bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
fe_status bad(const char *path, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fe::set_error(FE_ERR_BAD_MODEL, "adapter '%s' refused: %s", path, msg);
}

// The checks between the validator and llama.cpp: type keys, architecture, every tensor against the
// base. Fills the info fields of `a`.
fe_status check_against_base(const fe_model *m, const char *path, fe_adapter &a) {
    GgufFile ad, base;
    if (!ad.open(path)) return bad(path, "ggml could not read its GGUF header");
    std::string type = ad.str("adapter.type");
    if (type != "lora")
        return bad(path, "adapter.type is '%s'; this runtime applies LoRA adapters only", type.c_str());
    if (gguf_find_key(ad.g, "adapter.alora.invocation_tokens") >= 0)
        return bad(path, "it is an activated LoRA (adapter.alora.invocation_tokens), which this runtime does not "
                         "support; export a plain LoRA");
    char arch[64] = {0};
    llama_model_meta_val_str(m->model, "general.architecture", arch, sizeof arch);
    std::string aarch = ad.str("general.architecture");
    if (aarch != arch)
        return bad(path, "it is for architecture '%s', the model is '%s': it was made for another base model",
                   aarch.c_str(), arch);
    int64_t ka = gguf_find_key(ad.g, "adapter.lora.alpha");
    a.alpha = ka >= 0 ? gguf_get_val_f32(ad.g, ka) : 0.0f;
    a.name = ad.str("general.name");
    if (!base.open(m->path)) return bad(path, "cannot re-read the base model's GGUF header '%s'", m->path.c_str());

    struct Pair {
        ggml_tensor *a = nullptr, *b = nullptr;
    };
    std::map<std::string, Pair> pairs;
    for (ggml_tensor *t = ggml_get_first_tensor(ad.meta); t; t = ggml_get_next_tensor(ad.meta, t)) {
        std::string name = ggml_get_name(t);
        bool is_a = ends_with(name, ".lora_a"), is_b = ends_with(name, ".lora_b");
        if (!is_a && !is_b)
            return bad(path, "tensor '%s' is neither .lora_a nor .lora_b (norm or other adapter tensors are not "
                             "applied by this runtime)", name.c_str());
        if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16)
            return bad(path, "tensor '%s' has type %s; runtime adapters must be F32, F16 or BF16", name.c_str(),
                       ggml_type_name(t->type));
        if (ggml_n_dims(t) != 2)
            return bad(path, "tensor '%s' has %d dimensions; LoRA factors are 2-D", name.c_str(), ggml_n_dims(t));
        Pair &p = pairs[name.substr(0, name.size() - 7)];
        (is_a ? p.a : p.b) = t;
    }
    for (auto &kv : pairs) {
        const std::string &w = kv.first;
        const Pair &p = kv.second;
        if (!p.a || !p.b)
            return bad(path, "'%s' has %s but not %s (corrupt or truncated export)", w.c_str(),
                       p.a ? "lora_a" : "lora_b", p.a ? "lora_b" : "lora_a");
        if (!lora_target(w))
            return bad(path, "a LoRA for '%s', which this runtime does not adapt (attention q/k/v/output, "
                             "feed-forward gate/up/down and output only)", w.c_str());
        ggml_tensor *bt = ggml_get_tensor(base.meta, w.c_str());
        if (!bt)
            return bad(path, "the base model has no tensor '%s': the adapter was made for another base model",
                       w.c_str());
        const int64_t n_in = bt->ne[0], n_out = bt->ne[1], rank = p.a->ne[1];
        if (ggml_n_dims(bt) != 2 || p.a->ne[0] != n_in || p.b->ne[1] != n_out || p.b->ne[0] != rank || rank < 1 ||
            rank > std::min(n_in, n_out))
            return bad(path, "'%s': lora_a [%lld, %lld] and lora_b [%lld, %lld] do not fit the base weight [%lld, "
                             "%lld] (expected lora_a [n_in, rank], lora_b [rank, n_out]): the adapter was made for "
                             "another base model",
                       w.c_str(), (long long)p.a->ne[0], (long long)p.a->ne[1], (long long)p.b->ne[0],
                       (long long)p.b->ne[1], (long long)n_in, (long long)n_out);
        a.rank_max = std::max<int32_t>(a.rank_max, (int32_t)rank);
        a.size_bytes += ggml_nbytes(p.a) + ggml_nbytes(p.b);
        a.n_tensors++;
    }
    return FE_OK;
}

fe_status load(fe_model *m, const char *path, fe_adapter **out) {
    double t0 = fe::now_ms();
    if (!path || !*path) return fe::set_error(FE_ERR_INVALID_ARG, "adapter path is NULL or empty");
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return fe::set_error(e == ENOENT || e == ENOTDIR ? FE_ERR_FILE_NOT_FOUND : FE_ERR_BAD_MODEL,
                             "cannot open adapter '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) return bad(path, "not a regular file");
    fe_gguf_error gerr;
    memset(&gerr, 0, sizeof gerr);
    int rc = fe_gguf_validate_adapter_file(path, &gerr);
    if (rc == FE_GGUF_E_NOMEM) return fe::set_error(FE_ERR_OUT_OF_MEMORY, "adapter '%s': %s", path, gerr.message);
    if (rc != FE_GGUF_OK) return bad(path, "%s", gerr.message);

    auto a = std::make_unique<fe_adapter>();
    fe_status s = check_against_base(m, path, *a);
    if (s != FE_OK) return s;
    char hex[65];
    s = fe_file_sha256(path, hex);
    if (s != FE_OK) return s;
    a->sha256 = hex;
    a->path = path;
    if (a->name.empty()) {
        const char *slash = strrchr(path, '/');
        a->name = slash ? slash + 1 : path;
    }
    fe::ensure_backend();
    fe::clear_llama_errors();
    {
        std::lock_guard<std::mutex> lock(g_mu);
        a->la = llama_adapter_lora_init(m->model, path);
        if (!a->la) {
            std::string why = fe::take_llama_errors();
            return bad(path, "llama.cpp could not load it: %s", why.empty() ? "no details" : why.c_str());
        }
        a->model = m;
        m->adapters.push_back(a.get());
    }
    a->load_ms = fe::elapsed_ms(t0);
    *out = a.release();
    return FE_OK;
}

// With g_mu held: frees `a` for good (the llama.cpp half too while its model lives).
void destroy_locked(fe_adapter *a) {
    if (a->model) {
        auto &v = a->model->adapters;
        v.erase(std::remove(v.begin(), v.end(), a), v.end());
        llama_adapter_lora_free(a->la);
    }
    delete a;
}

bool same_set(const std::vector<fe::ActiveAdapter> &cur, const std::vector<fe::ActiveAdapter> &want) {
    if (cur.size() != want.size()) return false;
    for (const auto &w : want) {
        auto it = std::find_if(cur.begin(), cur.end(), [&](const fe::ActiveAdapter &c) { return c.adapter == w.adapter; });
        if (it == cur.end() || it->scale != w.scale) return false;
    }
    return true;
}

}  // namespace

namespace fe {

void session_drop_adapters(fe_session *s) {
    std::lock_guard<std::mutex> lock(g_mu);
    for (auto &e : s->adapters)
        if (--e.adapter->users == 0 && e.adapter->released) destroy_locked(e.adapter);
    s->adapters.clear();
}

void model_drop_adapters(fe_model *m) {
    std::lock_guard<std::mutex> lock(g_mu);
    for (fe_adapter *a : m->adapters) {
        a->model = nullptr;  // llama_model_free deletes a->la
        a->la = nullptr;
        if (a->released) delete a;
    }
    m->adapters.clear();
}

std::string adapter_set_id(const fe_session *s) {
    if (s->adapters.empty()) return "";
    std::vector<std::string> parts;
    for (const auto &e : s->adapters) {
        uint32_t bits;
        memcpy(&bits, &e.scale, 4);
        char buf[96];
        snprintf(buf, sizeof buf, "%s*%08x;", e.adapter->sha256.c_str(), bits);
        parts.emplace_back(buf);
    }
    std::sort(parts.begin(), parts.end());
    fe_sha256 sha;
    fe_sha256_init(&sha);
    for (const auto &p : parts) fe_sha256_update(&sha, p.data(), p.size());
    uint8_t d[32];
    fe_sha256_final(&sha, d);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return hex;
}

}  // namespace fe

extern "C" {

fe_status fe_adapter_load(fe_model *model, const char *path, fe_adapter **out) {
    return fe::guard("fe_adapter_load", [&]() -> fe_status {
        fe::clear_error();
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_adapter_load: out is NULL");
        *out = nullptr;
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_adapter_load: model is NULL");
        return load(model, path, out);
    });
}

void fe_adapter_free(fe_adapter *adapter) {
    if (!adapter) return;
    std::lock_guard<std::mutex> lock(g_mu);
    if (adapter->users > 0) {
        adapter->released = true;  // the last session that drops it frees it
        return;
    }
    destroy_locked(adapter);
}

fe_status fe_adapter_get_info(const fe_adapter *adapter, fe_adapter_info *out) {
    fe::clear_error();
    if (!adapter || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_adapter_get_info: adapter or out is NULL");
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", adapter->name.c_str());
    snprintf(out->sha256, sizeof out->sha256, "%s", adapter->sha256.c_str());
    out->n_tensors = adapter->n_tensors;
    out->rank_max = adapter->rank_max;
    out->alpha = adapter->alpha;
    out->size_bytes = adapter->size_bytes;
    out->load_ms = adapter->load_ms;
    return FE_OK;
}

fe_status fe_session_set_adapters(fe_session *session, fe_adapter *const *adapters, const float *scales, size_t n) {
    return fe::guard("fe_session_set_adapters", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_set_adapters: session is NULL");
        if (n > 0 && (!adapters || !scales))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_set_adapters: n = %zu but adapters or scales is NULL", n);
        if (n > FE_MAX_ACTIVE_ADAPTERS)
            return fe::set_error(FE_ERR_INVALID_ARG, "%zu adapters at once; at most %d may be active", n,
                                 FE_MAX_ACTIVE_ADAPTERS);
        if (session->req.active)
            return fe::set_error(FE_ERR_BUSY, "cannot change adapters while a request is running; finish or end it first");
        std::vector<fe::ActiveAdapter> want;
        std::lock_guard<std::mutex> lock(g_mu);  // no adapter is freed while the set changes
        {
            for (size_t i = 0; i < n; i++) {
                fe_adapter *a = adapters[i];
                if (!a) return fe::set_error(FE_ERR_INVALID_ARG, "adapter %zu is NULL", i);
                if (a->released) return fe::set_error(FE_ERR_INVALID_ARG, "adapter %zu was freed", i);
                if (a->model != session->model)
                    return fe::set_error(FE_ERR_INVALID_ARG, "adapter %zu ('%s') was loaded for another model; load it "
                                         "with fe_adapter_load on this session's model", i, a->name.c_str());
                if (!std::isfinite(scales[i]) || scales[i] < -100.0f || scales[i] > 100.0f)
                    return fe::set_error(FE_ERR_INVALID_ARG, "scale %g of adapter %zu is out of range: use a finite "
                                         "value in [-100, 100] (1 = as trained, 0 = off)", (double)scales[i], i);
                for (size_t j = 0; j < i; j++)
                    if (adapters[j] == a)
                        return fe::set_error(FE_ERR_INVALID_ARG, "adapter %zu is also adapter %zu; give each once", i, j);
                if (scales[i] != 0.0f) want.push_back({a, scales[i]});
            }
        }
        if (same_set(session->adapters, want)) return FE_OK;  // the cached K/V are still right
        std::vector<llama_adapter_lora *> la;
        std::vector<float> sc;
        for (const auto &w : want) {
            la.push_back(w.adapter->la);
            sc.push_back(w.scale);
        }
        llama_set_adapters_lora(session->ctx, la.empty() ? nullptr : la.data(), la.size(),
                                sc.empty() ? nullptr : sc.data());
        // K/V cached under the old set were computed with other weights: nothing is reusable.
        fe::forget_cache(session);
        for (const auto &w : want) w.adapter->users++;
        for (auto &e : session->adapters)
            if (--e.adapter->users == 0 && e.adapter->released) destroy_locked(e.adapter);
        session->adapters = std::move(want);
        return FE_OK;
    });
}

fe_status fe_session_get_adapters(const fe_session *session, fe_adapter **adapters, float *scales, size_t max,
                                  size_t *n_out) {
    fe::clear_error();
    if (!session || !n_out || (max > 0 && (!adapters || !scales)))
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_get_adapters: NULL argument");
    *n_out = session->adapters.size();
    for (size_t i = 0; i < session->adapters.size() && i < max; i++) {
        adapters[i] = session->adapters[i].adapter;
        scales[i] = session->adapters[i].scale;
    }
    return FE_OK;
}

}  // extern "C"
