/*
 * fe-run - one request through the C API, printed as JSON: the probe the differential tests
 * use to compare bindings (Python Engine, JNI, this tool on x86 and under qemu-aarch64).
 *
 *   fe-run -m MODEL -p PROMPT [--chat] [-n N] [-t THREADS] [-c N_CTX]
 *          [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S]
 *          [--ignore-eos]
 *
 * --chat: PROMPT is one user message, rendered with the model's chat template.
 * stdout: {"variant", "tokens": [...], "text", "finish_reason", "chat_prompt"}
 * Exit 0 on success; 1 with the core's message on stderr on any error; 2 on usage errors.
 */
#include "finllm_edge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t *tokens;
    size_t n, cap;
    char *text;
    size_t len, text_cap;
} collect_t;

static bool on_token(const char *piece, size_t n, int32_t token, void *ud) {
    collect_t *c = ud;
    if (token >= 0) {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 64;
            c->tokens = realloc(c->tokens, c->cap * sizeof *c->tokens);
            if (!c->tokens) return false;
        }
        c->tokens[c->n++] = token;
    }
    if (c->len + n + 1 > c->text_cap) {
        c->text_cap = 2 * (c->len + n + 1);
        c->text = realloc(c->text, c->text_cap);
        if (!c->text) return false;
    }
    memcpy(c->text + c->len, piece, n);
    c->len += n;
    c->text[c->len] = '\0';
    return true;
}

static void json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\r') fputs("\\r", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s -m MODEL -p PROMPT [--chat] [-n N] [-t THREADS] [-c N_CTX] [--temp T] [--top-k K]\n"
            "          [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S] [--ignore-eos]\n",
            argv0);
    return 2;
}

static int fail(const char *what, fe_status st) {
    fprintf(stderr, "fe-run: %s: %s (%s)\n", what, fe_last_error(), fe_status_str(st));
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL;
    bool chat = false;
    fe_session_params sp = fe_session_default_params();
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--chat")) { chat = true; continue; }
        if (!strcmp(a, "--ignore-eos")) { gp.ignore_eos = true; continue; }
        if (!v) return usage(argv[0]);
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-n")) gp.max_tokens = atoi(v);
        else if (!strcmp(a, "-t")) sp.n_threads = sp.n_threads_batch = atoi(v);
        else if (!strcmp(a, "-c")) sp.n_ctx = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--temp")) gp.sampling.temperature = strtof(v, NULL);
        else if (!strcmp(a, "--top-k")) gp.sampling.top_k = atoi(v);
        else if (!strcmp(a, "--top-p")) gp.sampling.top_p = strtof(v, NULL);
        else if (!strcmp(a, "--min-p")) gp.sampling.min_p = strtof(v, NULL);
        else if (!strcmp(a, "--repeat-penalty")) gp.sampling.repeat_penalty = strtof(v, NULL);
        else if (!strcmp(a, "--seed")) gp.sampling.seed = (uint32_t)strtoul(v, NULL, 10);
        else return usage(argv[0]);
        i++;
    }
    if (!model_path || !prompt) return usage(argv[0]);

    fe_model *model = NULL;
    fe_status st = fe_model_load(model_path, NULL, &model);
    if (st != FE_OK) return fail("load", st);
    fe_session *s = NULL;
    st = fe_session_create(model, &sp, &s);
    if (st != FE_OK) {
        fe_model_free(model);
        return fail("session", st);
    }
    char *rendered = NULL;
    size_t rendered_len = 0;
    collect_t c = {0};
    gp.on_token = on_token;
    gp.user_data = &c;
    fe_generate_result r;
    if (chat) {
        fe_chat_message msg = {"user", prompt};
        st = fe_chat_format(model, &msg, 1, true, NULL, 0, &rendered_len);
        if (st == FE_ERR_BUFFER_TOO_SMALL) {
            rendered = malloc(rendered_len + 1);
            st = rendered ? fe_chat_format(model, &msg, 1, true, rendered, rendered_len + 1, &rendered_len)
                          : FE_ERR_OUT_OF_MEMORY;
        }
        if (st == FE_OK) st = fe_request_start_chat(s, &msg, 1, &gp);
        if (st == FE_OK) {
            /* the same steps fe_generate drives, through the step API (what Python and JNI use) */
            fe_token_event ev;
            while ((st = fe_request_next(s, &ev)) == FE_OK) {
                on_token(ev.text, ev.text_len, ev.token, &c);
                if (ev.done) break;
            }
            r.stop_reason = ev.stop_reason;
        }
    } else {
        st = fe_generate(s, prompt, &gp, &r);
    }
    if (st != FE_OK) {
        fe_session_free(s);
        fe_model_free(model);
        return fail("generate", st);
    }
    printf("{\"variant\": ");
    json_string(fe_build_variant(), strlen(fe_build_variant()));
    printf(", \"tokens\": [");
    for (size_t i = 0; i < c.n; i++) printf(i ? ", %d" : "%d", c.tokens[i]);
    printf("], \"text\": ");
    json_string(c.text ? c.text : "", c.len);
    printf(", \"finish_reason\": \"%s\", \"chat_prompt\": ", fe_finish_reason(r.stop_reason));
    if (rendered) json_string(rendered, rendered_len);
    else printf("null");
    printf("}\n");
    free(rendered);
    free(c.tokens);
    free(c.text);
    fe_session_free(s);
    fe_model_free(model);
    return 0;
}
