// Tokenize / detokenize with the model's vocabulary.
#include "internal.h"

#include <climits>
#include <cstring>

namespace fe {

std::string token_piece(const llama_vocab *vocab, llama_token tok, bool special) {
    char small[128];
    int32_t n = llama_token_to_piece(vocab, tok, small, sizeof small, 0, special);
    if (n >= 0) return std::string(small, (size_t)n);
    std::string big((size_t)(-(int64_t)n), '\0');
    n = llama_token_to_piece(vocab, tok, &big[0], (int32_t)big.size(), 0, special);
    return n >= 0 ? big.substr(0, (size_t)n) : std::string();
}

fe_status check_prompt(const fe_model *model, const std::vector<llama_token> &prompt, int32_t n_ctx,
                       const char *owner) {
    const int32_t n_prompt = (int32_t)prompt.size();
    if (n_prompt <= 0) return set_error(FE_ERR_INVALID_ARG, "the prompt has no tokens");
    if (n_prompt >= n_ctx)
        return set_error(FE_ERR_CONTEXT_OVERFLOW,
                         "the prompt has %d tokens but each %s request holds n_ctx = %d (and the answer needs room "
                         "too); shorten the prompt or create the %s with a larger n_ctx",
                         n_prompt, owner, n_ctx, owner);
    const int32_t n_vocab = llama_vocab_n_tokens(model->vocab);
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[(size_t)i] < 0 || prompt[(size_t)i] >= n_vocab)
            return set_error(FE_ERR_INVALID_ARG, "prompt token %d at index %d is outside the vocabulary (0..%d)",
                             prompt[(size_t)i], i, n_vocab - 1);
    return FE_OK;
}

}  // namespace fe

extern "C" {

fe_status fe_tokenize(const fe_model *model, const char *text, bool add_special, bool parse_special,
                      int32_t *tokens, int32_t max_tokens, int32_t *n_out) {
    return fe::guard("fe_tokenize", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!model || !text || !n_out)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_tokenize: model, text or n_out is NULL");
        if (max_tokens < 0 || (max_tokens > 0 && !tokens))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_tokenize: tokens is NULL or max_tokens < 0");
        size_t len = strlen(text);
        if (len > (size_t)INT32_MAX) return fe::set_error(FE_ERR_INVALID_ARG, "fe_tokenize: text too long");
        int32_t n = llama_tokenize(model->vocab, text, (int32_t)len, tokens, max_tokens, add_special,
                                   parse_special);
        if (n == INT32_MIN) return fe::set_error(FE_ERR_INVALID_ARG, "fe_tokenize: token count overflows int32");
        if (n < 0) {
            *n_out = -n;
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "fe_tokenize: need room for %d tokens, got %d", -n,
                                 max_tokens);
        }
        *n_out = n;
        return FE_OK;
    });
}

fe_status fe_detokenize(const fe_model *model, const int32_t *tokens, int32_t n_tokens, bool render_special,
                        char *buf, size_t buf_size, size_t *n_out) {
    return fe::guard("fe_detokenize", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!model || !n_out || n_tokens < 0 || (n_tokens > 0 && !tokens) || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_detokenize: NULL argument or negative n_tokens");
        int32_t n_vocab = llama_vocab_n_tokens(model->vocab);
        for (int32_t i = 0; i < n_tokens; i++)
            if (tokens[i] < 0 || tokens[i] >= n_vocab)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_detokenize: token %d at index %d is outside the vocabulary (0..%d)",
                                     tokens[i], i, n_vocab - 1);
        int32_t cap = buf_size > (size_t)INT32_MAX ? INT32_MAX : (int32_t)buf_size;
        int32_t n = llama_detokenize(model->vocab, tokens, n_tokens, buf, cap, false, render_special);
        if (n < 0) {
            *n_out = (size_t)(-(int64_t)n);
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "fe_detokenize: need %d bytes, got %zu", -n, buf_size);
        }
        *n_out = (size_t)n;
        if ((size_t)n < buf_size) buf[n] = '\0';
        return FE_OK;
    });
}

fe_status fe_token_piece(const fe_model *model, int32_t token, bool special, char *buf, size_t buf_size,
                         size_t *n_out) {
    return fe::guard("fe_token_piece", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!model || !n_out || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_token_piece: NULL argument");
        int32_t n_vocab = llama_vocab_n_tokens(model->vocab);
        if (token < 0 || token >= n_vocab)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_token_piece: token %d is outside the vocabulary (0..%d)", token,
                                 n_vocab - 1);
        std::string p = fe::token_piece(model->vocab, token, special);
        *n_out = p.size();
        if (p.size() >= buf_size)
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "fe_token_piece: need %zu bytes + NUL", p.size());
        memcpy(buf, p.data(), p.size());
        buf[p.size()] = '\0';
        return FE_OK;
    });
}

int32_t fe_token_eos(const fe_model *model) {
    if (!model) return -1;
    llama_token t = llama_vocab_eos(model->vocab);
    return t < 0 ? -1 : t;
}

int32_t fe_token_bos(const fe_model *model) {
    if (!model) return -1;
    llama_token t = llama_vocab_bos(model->vocab);
    return t < 0 ? -1 : t;
}

bool fe_token_is_eog(const fe_model *model, int32_t token) {
    if (!model || token < 0 || token >= llama_vocab_n_tokens(model->vocab)) return false;
    return llama_vocab_is_eog(model->vocab, token);
}

}  // extern "C"
