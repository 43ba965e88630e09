// Model loading (mmap), freeing and information; the llama contexts sessions and the scheduler run on.
#include "internal.h"

#include <cctype>
#include <cstring>

namespace fe {

llama_context *new_context(const fe_model *model, const ContextSpec &spec) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = spec.n_ctx * spec.n_seq;
    cp.n_batch = spec.n_batch;
    cp.n_ubatch = spec.n_ubatch;
    cp.n_seq_max = spec.n_seq;
    cp.kv_unified = false;  // one KV stream per sequence: its cells start at 0, as in a session
    cp.n_threads = spec.n_threads;
    cp.n_threads_batch = spec.n_threads_batch;
    cp.abort_callback = spec.abort;
    cp.abort_callback_data = spec.abort_data;
    cp.no_perf = true;
    // Flash attention is a choice: llama.cpp's CPU flash attention is faster at prefill but not
    // batch-invariant (a tiled kernel for >= 64 query rows, a row kernel below, a split-KV kernel
    // for one row over >= 512 cells); generate.cpp and the scheduler keep prefix reuse exact on
    // either setting by the kernel path of each row (fe::RowPath). Off is the batch-invariant path.
    cp.flash_attn_type = spec.flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    clear_llama_errors();
    llama_context *ctx = llama_init_from_model(model->model, cp);
    if (!ctx) {
        std::string why = take_llama_errors();
        char shape[64];
        if (spec.n_seq == 1) snprintf(shape, sizeof shape, "%u tokens", spec.n_ctx);
        else snprintf(shape, sizeof shape, "%u x %u tokens", spec.n_seq, spec.n_ctx);
        set_error(FE_ERR_OUT_OF_MEMORY, "llama.cpp could not create a context of %s: %s", shape,
                  why.empty() ? "no details" : why.c_str());
    }
    return ctx;
}

fe_status preflight(const char *path, uint64_t *file_size);

fe_status model_sha256(const fe_model *m, char hex[65]) {
    if (!m->declared_sha256.empty()) {
        memcpy(hex, m->declared_sha256.c_str(), 65);
        return FE_OK;
    }
    return fe_file_sha256(m->path.c_str(), hex);
}
}

extern "C" {

fe_model_params fe_model_default_params(void) {
    fe_model_params p;
    p.use_mmap = true;
    p.use_mlock = false;
    p.check_tensors = false;
    return p;
}

fe_status fe_model_load(const char *path, const fe_model_params *params, fe_model **out) {
    return fe::guard("fe_model_load", [&]() -> fe_status {
        fe::clear_error();
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_model_load: out is NULL");
        *out = nullptr;
        double t0 = fe::now_ms();
        fe_model_params p = params ? *params : fe_model_default_params();
        uint64_t file_size = 0;
        fe_status st = fe::preflight(path, &file_size);
        if (st != FE_OK) return st;
        fe::ensure_backend();

        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = 0;
        mp.load_mode = p.use_mmap ? (p.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP)
                                  : (p.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE);
        mp.check_tensors = p.check_tensors;
        fe::clear_llama_errors();
        llama_model *lm = llama_model_load_from_file(path, mp);
        if (!lm) {
            std::string why = fe::take_llama_errors();
            return fe::set_error(FE_ERR_BAD_MODEL, "llama.cpp could not load '%s': %s", path,
                                 why.empty() ? "no details" : why.c_str());
        }
        fe_model *m = new (std::nothrow) fe_model();
        if (!m) {
            llama_model_free(lm);
            return fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_model_load: out of memory");
        }
        m->model = lm;
        m->vocab = llama_model_get_vocab(lm);
        m->path = path;
        m->file_size = file_size;
        fe_model_set_chat_template(m, nullptr);  // parse + check the GGUF's template now (errors kept)
        fe::clear_error();
        m->load_ms = fe::elapsed_ms(t0);
        *out = m;
        return FE_OK;
    });
}

fe_status fe_model_set_sha256(fe_model *model, const char *sha256_hex) {
    return fe::guard("fe_model_set_sha256", [&]() -> fe_status {
        fe::clear_error();
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_model_set_sha256: model is NULL");
        if (!sha256_hex) {
            model->declared_sha256.clear();
            return FE_OK;
        }
        size_t n = strnlen(sha256_hex, 65);
        std::string hex(sha256_hex, n);
        bool ok = n == 64;
        for (char &c : hex) {
            c = (char)tolower((unsigned char)c);
            ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        }
        if (!ok)
            return fe::set_error(FE_ERR_INVALID_ARG,
                                 "fe_model_set_sha256: '%.70s' is not a sha256 (64 hex digits)", sha256_hex);
        model->declared_sha256 = hex;
        return FE_OK;
    });
}

void fe_model_free(fe_model *model) {
    if (!model) return;
    fe::model_drop_adapters(model);  // llama_model_free deletes their llama.cpp halves
    llama_model_free(model->model);
    delete model;
}

fe_status fe_model_get_info(const fe_model *model, fe_model_info *out) {
    return fe::guard("fe_model_get_info", [&]() -> fe_status {
        fe::clear_error();
        if (!model || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_model_get_info: model or out is NULL");
        memset(out, 0, sizeof *out);
        llama_model_desc(model->model, out->desc, sizeof out->desc);
        out->size_bytes = llama_model_size(model->model);
        out->file_size_bytes = model->file_size;
        out->n_params = llama_model_n_params(model->model);
        out->bits_per_weight = out->n_params ? 8.0 * (double)out->size_bytes / (double)out->n_params : 0.0;
        out->n_ctx_train = llama_model_n_ctx_train(model->model);
        out->n_vocab = llama_vocab_n_tokens(model->vocab);
        out->has_chat_template = model->chat != nullptr;
        out->load_ms = model->load_ms;
        return FE_OK;
    });
}

fe_status fe_model_meta(const fe_model *model, const char *key, char *buf, size_t buf_size, size_t *n_out) {
    return fe::guard("fe_model_meta", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!model || !key || !n_out || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_model_meta: NULL argument");
        int32_t n = llama_model_meta_val_str(model->model, key, nullptr, 0);
        if (n < 0) return fe::set_error(FE_ERR_INVALID_ARG, "the model has no metadata key '%s'", key);
        std::string v((size_t)n + 1, '\0');
        llama_model_meta_val_str(model->model, key, &v[0], v.size());
        v.resize((size_t)n);
        *n_out = v.size();
        if (v.size() >= buf_size)
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "fe_model_meta: need %zu bytes + NUL", v.size());
        memcpy(buf, v.data(), v.size());
        buf[v.size()] = '\0';
        return FE_OK;
    });
}

}  // extern "C"
