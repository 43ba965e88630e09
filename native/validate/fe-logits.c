/*
 * fe-logits - dump what a llama.cpp build computes for one prompt, for cross-build parity:
 * prompt tokens, the logits of every prompt position, and n greedy (argmax) tokens.
 *
 *   fe-logits -m model.gguf -p "prompt" [-n 8] [-t 2] [-k 5] [--logits-out FILE] [--log]
 *
 * stdout: one JSON object
 *   {"variant", "system_info", "n_vocab", "prompt_tokens": [...], "gen_tokens": [...],
 *    "prompt_top": [[[id, logit] x k] per prompt position], "gen_top": [... per step]}
 * --logits-out FILE: the logits of all prompt positions, float32 little-endian,
 *   row-major [n_prompt][n_vocab].
 * --log: llama.cpp's own log (all levels, including the CPU backend's "repack" lines) on
 *   stderr; without it only warnings and errors.
 *
 * Greedy = argmax of the raw logits, ties to the lowest id (no sampler state involved), so
 * two builds agree exactly when their logits order the top token the same way.
 * Built against the same llama.cpp prefix as fe-bench (finllm_edge/aarch64.py).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

#ifndef FE_VARIANT
#define FE_VARIANT ""
#endif

static int g_log_all = 0;

static void log_cb(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (g_log_all || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s -m MODEL -p PROMPT [-n N_GEN] [-t THREADS] [-k TOPK] [-c N_CTX]\n"
            "          [--logits-out FILE] [--log]\n",
            argv0);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Print the k largest (id, logit) pairs of v, largest first, ties by lower id. */
static void print_top(const float *v, int n, int k) {
    int *ids = malloc(sizeof(int) * (size_t)k);
    int m = 0;
    for (int i = 0; i < n; i++) {
        int pos = m;
        while (pos > 0 && v[i] > v[ids[pos - 1]]) pos--;
        if (pos >= k) continue;
        if (m < k) m++;
        memmove(ids + pos + 1, ids + pos, sizeof(int) * (size_t)(m - 1 - pos));
        ids[pos] = i;
    }
    putchar('[');
    for (int j = 0; j < m; j++) printf("%s[%d,%.6g]", j ? "," : "", ids[j], (double)v[ids[j]]);
    putchar(']');
    free(ids);
}

static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *logits_out = NULL;
    int n_gen = 8, n_threads = 2, top_k = 5, n_ctx = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--log")) { g_log_all = 1; continue; }
        if (!v) { usage(argv[0]); return 2; }
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-n")) n_gen = atoi(v);
        else if (!strcmp(a, "-t")) n_threads = atoi(v);
        else if (!strcmp(a, "-k")) top_k = atoi(v);
        else if (!strcmp(a, "-c")) n_ctx = atoi(v);
        else if (!strcmp(a, "--logits-out")) logits_out = v;
        else { usage(argv[0]); return 2; }
        i++;
    }
    if (!model_path || !prompt || n_gen < 0 || n_threads < 1 || top_k < 1 || n_ctx < 8) {
        usage(argv[0]);
        return 2;
    }

    llama_log_set(log_cb, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) { fprintf(stderr, "fe-logits: cannot load %s\n", model_path); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    int n_prompt = -llama_tokenize(vocab, prompt, (int32_t)strlen(prompt), NULL, 0, true, true);
    if (n_prompt <= 0 || n_prompt + n_gen > n_ctx) {
        fprintf(stderr, "fe-logits: prompt has %d tokens; with -n %d it must fit -c %d\n", n_prompt, n_gen, n_ctx);
        llama_model_free(model);
        return 1;
    }
    llama_token *toks = malloc(sizeof(llama_token) * (size_t)(n_prompt + n_gen));
    llama_tokenize(vocab, prompt, (int32_t)strlen(prompt), toks, n_prompt, true, true);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "fe-logits: cannot create a context\n"); llama_model_free(model); return 1; }

    struct llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    for (int i = 0; i < n_prompt; i++) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n_prompt;
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "fe-logits: prompt decode failed\n"); return 1; }

    FILE *lf = NULL;
    if (logits_out && !(lf = fopen(logits_out, "wb"))) { perror(logits_out); return 1; }

    char desc[128];
    llama_model_desc(model, desc, sizeof desc);
    printf("{\"variant\":");
    print_json_string(FE_VARIANT);
    printf(",\"model_desc\":");
    print_json_string(desc);
    printf(",\"system_info\":");
    print_json_string(llama_print_system_info());
    printf(",\"n_vocab\":%d,\"n_threads\":%d,\"prompt_tokens\":[", n_vocab, n_threads);
    for (int i = 0; i < n_prompt; i++) printf("%s%d", i ? "," : "", toks[i]);
    printf("],\"prompt_top\":[");
    for (int i = 0; i < n_prompt; i++) {
        const float *lg = llama_get_logits_ith(ctx, i);
        if (lf && fwrite(lg, sizeof(float), (size_t)n_vocab, lf) != (size_t)n_vocab) { perror(logits_out); return 1; }
        if (i) putchar(',');
        print_top(lg, n_vocab, top_k);
    }
    if (lf && fclose(lf) != 0) { perror(logits_out); return 1; }

    int next = argmax(llama_get_logits_ith(ctx, n_prompt - 1), n_vocab);
    printf("],\"gen_top\":[");
    int n_done = 0;
    for (; n_done < n_gen; n_done++) {
        toks[n_prompt + n_done] = next;
        if (n_done + 1 == n_gen) break;
        struct llama_batch one = llama_batch_get_one(&toks[n_prompt + n_done], 1);
        if (llama_decode(ctx, one) != 0) { fprintf(stderr, "fe-logits: decode failed\n"); return 1; }
        const float *lg = llama_get_logits_ith(ctx, -1);
        if (n_done) putchar(',');
        print_top(lg, n_vocab, top_k);
        next = argmax(lg, n_vocab);
    }
    printf("],\"gen_tokens\":[");
    for (int i = 0; i < n_gen; i++) printf("%s%d", i ? "," : "", toks[n_prompt + i]);
    printf("],\"gen_text\":");
    {
        size_t cap = 64 + (size_t)n_gen * 64, len = 0;
        char *text = malloc(cap);
        for (int i = 0; i < n_gen; i++) {
            int32_t n = llama_token_to_piece(vocab, toks[n_prompt + i], text + len, (int32_t)(cap - len - 1), 0, false);
            if (n > 0) len += (size_t)n;
        }
        text[len] = '\0';
        print_json_string(text);
        free(text);
    }
    printf("}\n");

    llama_batch_free(batch);
    free(toks);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
