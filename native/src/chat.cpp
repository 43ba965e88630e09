// Chat formatting with the model's own template (llama.cpp's built-in template engine,
// which pattern-matches known templates; template text is never executed).
#include "internal.h"

#include <climits>
#include <cstring>

extern "C" fe_status fe_chat_format(const fe_model *model, const fe_chat_message *messages, size_t n_messages,
                                    bool add_assistant, char *buf, size_t buf_size, size_t *n_out) {
    return fe::guard("fe_chat_format", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!model || !n_out || (n_messages > 0 && !messages) || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_chat_format: NULL argument");
        std::vector<llama_chat_message> chat(n_messages);
        for (size_t i = 0; i < n_messages; i++) {
            if (!messages[i].role || !messages[i].content)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_chat_format: message %zu has a NULL role or content", i);
            chat[i] = {messages[i].role, messages[i].content};
        }
        const char *tmpl = llama_model_chat_template(model->model, nullptr);
        if (!tmpl)
            return fe::set_error(FE_ERR_TEMPLATE, "the model has no chat template (tokenizer.chat_template); "
                                                  "format the prompt yourself and call fe_generate");
        // llama_chat_apply_template wants an int32 length and may write up to `length` bytes.
        std::vector<char> tmp;
        int32_t cap = buf_size > (size_t)INT32_MAX ? INT32_MAX : (int32_t)buf_size;
        fe::clear_llama_errors();
        int32_t n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), add_assistant, buf, cap);
        if (n < 0) {
            std::string why = fe::take_llama_errors();
            return fe::set_error(FE_ERR_TEMPLATE, "llama.cpp does not support this model's chat template%s%s",
                                 why.empty() ? "" : ": ", why.c_str());
        }
        *n_out = (size_t)n;
        if ((size_t)n >= buf_size)
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "fe_chat_format: need %d bytes + NUL, got %zu", n, buf_size);
        buf[n] = '\0';
        return FE_OK;
    });
}
