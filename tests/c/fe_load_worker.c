/* Fuzz worker for scripts/fuzz_gguf_values.py: reads model paths from stdin, one a line, and
 * for each runs the C API the way an app does: fe_model_load (pre-flight validation, then
 * llama.cpp), fe_session_create, tokenize + detokenize a line, generate one token after it. Prints one
 * line per path: "@@refused <message>" (the validator), "@@llama_error <message>" (a clean
 * error after validation) or "@@ran". A signal kills the process: the parent counts it. */
#include <stdio.h>
#include <string.h>

#include "finllm_edge.h"

static void one_line(char *s) {
    for (; *s; s++) if (*s == '\n' || *s == '\r') *s = ' ';
}

int main(void) {
    char path[4096], err[1024], text[256];
    fe_set_log_level(FE_LOG_NONE);
    while (fgets(path, sizeof path, stdin)) {
        fe_model *m = NULL;
        fe_session *s = NULL;
        fe_model_params mp = fe_model_default_params();
        fe_session_params sp = fe_session_default_params();
        fe_generate_params gp = fe_generate_default_params();
        int32_t toks[64], n = 0;
        size_t nb = 0;
        fe_status st;
        path[strcspn(path, "\n")] = '\0';
        if (fe_gguf_preflight(path) != FE_OK) {
            snprintf(err, sizeof err, "%s", fe_last_error());
            one_line(err);
            printf("@@refused %s\n", err);
            fflush(stdout);
            continue;
        }
        sp.n_ctx = 64;
        sp.n_threads = sp.n_threads_batch = 1;
        gp.max_tokens = 1;
        st = fe_model_load(path, &mp, &m);
        if (st == FE_OK) st = fe_session_create(m, &sp, &s);
        if (st == FE_OK) st = fe_tokenize(m, "Hi there\n a b", true, true, toks, 64, &n);
        if (st == FE_OK) st = fe_detokenize(m, toks, n, true, text, sizeof text, &nb);
        if (st == FE_OK) {  /* one token after the tokenized line (or token 0 if it had none) */
            int32_t first = 0;
            st = fe_generate_tokens(s, n > 0 ? toks : &first, n > 0 ? n : 1, &gp, NULL);
        }
        if (st == FE_OK) {
            printf("@@ran\n");
        } else {
            snprintf(err, sizeof err, "%s", fe_last_error());
            one_line(err);
            printf("@@llama_error %s\n", err);
        }
        fflush(stdout);
        fe_session_free(s);
        fe_model_free(m);
    }
    return 0;
}
