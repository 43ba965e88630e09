/* Prefix reuse and saved prompt state with SmolLM2: a session that reuses its KV cache gives
 * the same tokens as one that evaluates every prompt from scratch (greedy and seeded, partial
 * and full overlaps, after cancel, a full context and stop strings); state files round-trip
 * and every corrupt variant is refused. argv[1] = SmolLM2 GGUF, argv[2] = a scratch dir. */
#include "finllm_edge.h"
#include "fe_test.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

static fe_model *g_model;
static char g_dir[512];
static bool g_fa; /* new sessions use flash attention */

#define MAXT 512
typedef struct {
    int32_t tokens[MAXT];
    int n;
    fe_session *cancel_after_s; /* cancel this session after cancel_after tokens */
    int cancel_after;
} collect_t;

static bool collect(const char *piece, size_t n, int32_t token, void *user) {
    (void)piece;
    (void)n;
    collect_t *c = (collect_t *)user;
    if (token >= 0 && c->n < MAXT) c->tokens[c->n++] = token;
    if (c->cancel_after_s && c->n >= c->cancel_after) fe_session_cancel(c->cancel_after_s);
    return true;
}

static fe_session *new_session(uint32_t n_ctx, bool reuse, uint32_t n_batch) {
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = n_ctx;
    sp.n_threads = 1;
    sp.n_threads_batch = 1;
    sp.prefix_reuse = reuse;
    sp.flash_attn = g_fa;
    if (n_batch) sp.n_batch = n_batch;
    fe_session *s = NULL;
    if (fe_session_create(g_model, &sp, &s) != FE_OK) fprintf(stderr, "session: %s\n", fe_last_error());
    return s;
}

static fe_generate_params params(int max_tokens, bool sampled, collect_t *c) {
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = max_tokens;
    if (sampled) {
        gp.sampling.temperature = 0.9f;
        gp.sampling.seed = 1234;
        gp.sampling.repeat_penalty = 1.3f;
    }
    memset(c, 0, sizeof *c);
    gp.on_token = collect;
    gp.user_data = c;
    return gp;
}

static int32_t reused(fe_session *s) {
    fe_profile p;
    fe_session_get_profile(s, &p);
    return p.n_prompt_reused;
}

static bool same(const collect_t *a, const collect_t *b) {
    return a->n == b->n && memcmp(a->tokens, b->tokens, sizeof(int32_t) * (size_t)a->n) == 0;
}

static const char *SYS =
    "<|im_start|>system\nYou are a careful financial analyst. Answer briefly, cite the numbers you use, and say "
    "when the data is not enough to answer.<|im_end|>\n";

/* Each prompt on a reusing session (in order) and on a fresh no-reuse session: same tokens. */
static void check_sequence(const char *const *prompts, int n, bool sampled, int max_tokens, int32_t *reuse_out) {
    fe_session *r = new_session(2048, true, 0), *f = new_session(2048, false, 0);
    REQUIRE(r && f);
    static collect_t a, b;
    for (int i = 0; i < n; i++) {
        fe_generate_params ga = params(max_tokens, sampled, &a), gb = params(max_tokens, sampled, &b);
        CHECK_STATUS(fe_generate(r, prompts[i], &ga, NULL), FE_OK, NULL);
        CHECK_STATUS(fe_generate(f, prompts[i], &gb, NULL), FE_OK, NULL);
        CHECK(a.n > 0);
        if (!same(&a, &b)) fprintf(stderr, "  prompt %d: %d vs %d tokens differ\n", i, a.n, b.n);
        CHECK(same(&a, &b));
        CHECK(reused(f) == 0);
        if (reuse_out) reuse_out[i] = reused(r);
    }
    fe_session_free(r);
    fe_session_free(f);
}

static void test_reuse_same_tokens(void) {
    char p1[1024], p2[1024], p3[1024], p4[2048];
    snprintf(p1, sizeof p1, "%s<|im_start|>user\nWhat is a bond coupon?<|im_end|>\n<|im_start|>assistant\n", SYS);
    snprintf(p2, sizeof p2, "%s<|im_start|>user\nWhat is EBITDA?<|im_end|>\n<|im_start|>assistant\n", SYS);
    snprintf(p3, sizeof p3, "<|im_start|>user\nName one risk of leverage.<|im_end|>\n<|im_start|>assistant\n");
    /* p4 continues p2 like a chat: p2 + an answer + a new turn */
    snprintf(p4, sizeof p4,
             "%sEBITDA is earnings before interest, taxes, depreciation and amortization.<|im_end|>\n"
             "<|im_start|>user\nAnd EBIT?<|im_end|>\n<|im_start|>assistant\n", p2);
    const char *seq[] = {p1, p2, p2, p4, p3, p1, SYS};
    int32_t re[7];
    for (int sampled = 0; sampled < 2; sampled++) {
        check_sequence(seq, 7, sampled, 16, re);
        fprintf(stderr, "  %s reused:", sampled ? "seeded" : "greedy");
        for (int i = 0; i < 7; i++) fprintf(stderr, " %d", re[i]);
        fprintf(stderr, "\n");
        CHECK(re[0] == 0);
        CHECK(re[1] > 20);            /* the system prompt */
        int32_t n2 = 0, toks[1024];
        fe_tokenize(g_model, p2, true, true, toks, 1024, &n2);
        CHECK(re[2] == n2 - 2);       /* all cached: the last two prompt tokens are evaluated again */
        CHECK(re[3] == n2);           /* p2, not its answer (generated tokens are not reused) */
        CHECK(re[4] <= 5);            /* unrelated: nothing (or only the shared chat markup) */
        CHECK(re[6] > 20 && re[6] < n2); /* a prefix of the cached tokens */
    }
}

static void test_reuse_off_and_profile(void) {
    fe_session *s = new_session(1024, true, 0);
    REQUIRE(s);
    static collect_t c;
    char p[1024];
    snprintf(p, sizeof p, "%s<|im_start|>user\nDefine yield.<|im_end|>\n<|im_start|>assistant\n", SYS);
    fe_generate_params gp = params(4, false, &c);
    CHECK_STATUS(fe_generate(s, p, &gp, NULL), FE_OK, NULL);
    int32_t n_cached = 0;
    CHECK_STATUS(fe_session_cached_tokens(s, NULL, 0, &n_cached), FE_OK, NULL);
    fe_profile prof;
    fe_session_get_profile(s, &prof);
    CHECK(prof.n_prompt_reused == 0);
    /* the cache holds the prompt and the decoded answer tokens, not the last sampled one */
    CHECK(n_cached == prof.n_prompt + prof.n_gen - 1);
    gp = params(4, false, &c);
    CHECK_STATUS(fe_generate(s, p, &gp, NULL), FE_OK, NULL);
    fe_session_get_profile(s, &prof);
    CHECK(prof.n_prompt_reused == prof.n_prompt - 2);
    CHECK(prof.prefill_tok_s > 0);
    CHECK(fe_session_reset(s) == FE_OK);
    CHECK_STATUS(fe_session_cached_tokens(s, NULL, 0, &n_cached), FE_OK, NULL);
    CHECK(n_cached == 0);
    gp = params(4, false, &c);
    CHECK_STATUS(fe_generate(s, p, &gp, NULL), FE_OK, NULL);
    CHECK(reused(s) == 0);
    fe_session_free(s);
}

typedef struct {
    fe_session *s;
    int ms;
} canceller_t;

static void *cancel_later(void *arg) {
    canceller_t *c = (canceller_t *)arg;
    struct timespec ts = {0, (long)c->ms * 1000000L};
    nanosleep(&ts, NULL);
    fe_session_cancel(c->s);
    return NULL;
}

static void test_after_cancel(void) {
    /* a long prompt in small batches, cancelled during its prefill from another thread */
    static char longp[16384];
    size_t off = (size_t)snprintf(longp, sizeof longp, "%s<|im_start|>user\n", SYS);
    for (int i = 0; i < 80 && off < sizeof longp - 200; i++)
        off += (size_t)snprintf(longp + off, sizeof longp - off, "Quarter %d revenue rose %d%% on lending. ", i,
                                i % 9 + 1);
    snprintf(longp + off, sizeof longp - off, "Summarize.<|im_end|>\n<|im_start|>assistant\n");
    char p2[1024];
    snprintf(p2, sizeof p2, "%s<|im_start|>user\nQuarter 0 revenue?<|im_end|>\n<|im_start|>assistant\n", SYS);
    fe_session *r = new_session(2048, true, 32), *f = new_session(2048, false, 0);
    REQUIRE(r && f);
    static collect_t a, b;
    fe_generate_params ga = params(8, false, &a);
    canceller_t cc = {r, 300};
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &cc);
    fe_status st = fe_generate(r, longp, &ga, NULL);
    pthread_join(th, NULL);
    CHECK(st == FE_ERR_CANCELLED);
    int32_t n_cached = 0, n_long = 0;
    static int32_t toks[4096], cached[4096];
    fe_tokenize(g_model, longp, true, true, toks, 4096, &n_long);
    CHECK_STATUS(fe_session_cached_tokens(r, cached, 4096, &n_cached), FE_OK, NULL);
    fprintf(stderr, "  cancelled prefill left %d of %d prompt tokens cached\n", n_cached, n_long);
    CHECK(n_cached < n_long && n_cached % 32 == 0);
    CHECK(memcmp(cached, toks, sizeof(int32_t) * (size_t)n_cached) == 0);
    /* then: the same prompt, and another sharing the system prompt, match a fresh session */
    const char *next[] = {longp, p2};
    for (int i = 0; i < 2; i++) {
        ga = params(8, i == 1, &a);
        fe_generate_params gb = params(8, i == 1, &b);
        CHECK_STATUS(fe_generate(r, next[i], &ga, NULL), FE_OK, NULL);
        CHECK_STATUS(fe_generate(f, next[i], &gb, NULL), FE_OK, NULL);
        CHECK(same(&a, &b));
        if (i == 0) CHECK(reused(r) == n_cached);
    }
    /* cancelled while generating: the decoded tokens stay cached and reuse stays exact */
    ga = params(40, false, &a);
    a.cancel_after_s = r;
    a.cancel_after = 5;
    CHECK_STATUS(fe_generate(r, p2, &ga, NULL), FE_ERR_CANCELLED, "cancelled");
    ga = params(8, false, &a);
    fe_generate_params gb = params(8, false, &b);
    CHECK_STATUS(fe_generate(r, p2, &ga, NULL), FE_OK, NULL);
    CHECK_STATUS(fe_generate(f, p2, &gb, NULL), FE_OK, NULL);
    CHECK(same(&a, &b));
    fe_session_free(r);
    fe_session_free(f);
}

static void test_after_context_full_and_stop(void) {
    fe_session *r = new_session(96, true, 0), *f = new_session(96, false, 0);
    REQUIRE(r && f);
    static collect_t a, b;
    char p[1024];
    snprintf(p, sizeof p, "%s<|im_start|>user\nList ten bank ratios.<|im_end|>\n<|im_start|>assistant\n", SYS);
    fe_generate_result res;
    fe_generate_params ga = params(200, false, &a);
    ga.ignore_eos = true;
    CHECK_STATUS(fe_generate(r, p, &ga, &res), FE_OK, NULL);
    CHECK(res.stop_reason == FE_STOP_CONTEXT_FULL);
    int32_t n_cached = 0;
    fe_session_cached_tokens(r, NULL, 0, &n_cached);
    CHECK(n_cached <= 96);
    /* a prompt too long for n_ctx is refused before any work: the cache is untouched */
    static char big[8192];
    size_t off = (size_t)snprintf(big, sizeof big, "%s", SYS);
    for (int i = 0; i < 30; i++) off += (size_t)snprintf(big + off, sizeof big - off, "more words here ");
    ga = params(4, false, &a);
    CHECK_STATUS(fe_generate(r, big, &ga, NULL), FE_ERR_CONTEXT_OVERFLOW, NULL);
    int32_t n2 = 0;
    fe_session_cached_tokens(r, NULL, 0, &n2);
    CHECK(n2 == n_cached);
    for (int sampled = 0; sampled < 2; sampled++) {
        ga = params(16, sampled, &a);
        fe_generate_params gb = params(16, sampled, &b);
        CHECK_STATUS(fe_generate(r, p, &ga, NULL), FE_OK, NULL);
        CHECK_STATUS(fe_generate(f, p, &gb, NULL), FE_OK, NULL);
        CHECK(same(&a, &b));
        CHECK(reused(r) > 20);
    }
    /* a stop string ends the request early; the next request still matches */
    const char *stops[] = {" "};
    ga = params(16, false, &a);
    ga.stop = stops;
    ga.n_stop = 1;
    CHECK_STATUS(fe_generate(r, p, &ga, &res), FE_OK, NULL);
    CHECK(res.stop_reason == FE_STOP_STRING);
    ga = params(16, true, &a);
    fe_generate_params gb = params(16, true, &b);
    CHECK_STATUS(fe_generate(r, p, &ga, NULL), FE_OK, NULL);
    CHECK_STATUS(fe_generate(f, p, &gb, NULL), FE_OK, NULL);
    CHECK(same(&a, &b));
    fe_session_free(r);
    fe_session_free(f);
}

/* ------------------------------------------------------------------ flash attention */

static int32_t n_tokens_of(const char *text) {
    static int32_t toks[4096];
    int32_t n = 0;
    fe_tokenize(g_model, text, true, true, toks, 4096, &n);
    return n;
}

static int32_t min32(int32_t a, int32_t b) { return a < b ? a : b; }

/* With flash attention on, reuse stays exact: long prompts (>= 64 tokens) take the tiled kernel
 * and keep the last 64 tokens for evaluation, short ones the row kernel, and cached tokens of
 * one path are never reused by a prompt on the other. */
static void test_flash_attn_reuse(void) {
    g_fa = true;
    static char lsys[2048], p1[4096], p2[4096], p4[8192], p3[512], p3b[1024];
    size_t off = (size_t)snprintf(lsys, sizeof lsys, "%s<|im_start|>user\nContext:", SYS);
    for (int i = 0; i < 12; i++)
        off += (size_t)snprintf(lsys + off, sizeof lsys - off, " In Q%d net interest margin was %d.%d%%.", i % 4 + 1,
                                i % 3 + 2, i % 7);
    snprintf(p1, sizeof p1, "%s Which quarter was best?<|im_end|>\n<|im_start|>assistant\n", lsys);
    snprintf(p2, sizeof p2, "%s Was the margin stable?<|im_end|>\n<|im_start|>assistant\n", lsys);
    snprintf(p4, sizeof p4, "%sMostly, within a point.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
             "<|im_start|>assistant\n", p2);
    snprintf(p3, sizeof p3, "<|im_start|>user\nName one risk of leverage.<|im_end|>\n");
    snprintf(p3b, sizeof p3b, "%s<|im_start|>assistant\n", p3);
    const int32_t n_lsys = n_tokens_of(lsys), n1 = n_tokens_of(p1), n2 = n_tokens_of(p2), n4 = n_tokens_of(p4),
                  n3 = n_tokens_of(p3), n3b = n_tokens_of(p3b);
    REQUIRE(n_lsys >= 128 && n3b < 64 && n4 - n2 < 64);
    (void)n1;
    const char *seq[] = {p1, p2, p2, p4, p3, p3b, p1, lsys};
    int32_t re[8];
    for (int sampled = 0; sampled < 2; sampled++) {
        check_sequence(seq, 8, sampled, 12, re);
        fprintf(stderr, "  flash attention, %s reused:", sampled ? "seeded" : "greedy");
        for (int i = 0; i < 8; i++) fprintf(stderr, " %d", re[i]);
        fprintf(stderr, "\n");
        CHECK(re[0] == 0);
        CHECK(re[1] >= n_lsys - 2 - 64 && re[1] <= n2 - 64); /* the shared context, up to 64 before the end */
        CHECK(re[2] == n2 - 64);                        /* all cached: the last 64 are evaluated again */
        CHECK(re[3] == min32(n2, n4 - 64));             /* p2's prompt tokens, not its answer */
        CHECK(re[4] == 0);                              /* short prompt: another kernel path */
        CHECK(re[5] == n3);                             /* short after short: all of p3 */
        CHECK(re[6] == 0);                              /* long after short: nothing */
        CHECK(re[7] == n_lsys - 64);
    }

    /* cancelled during a prefill in chunks of 128: the cached chunks are reused exactly */
    static char longp[16384];
    off = (size_t)snprintf(longp, sizeof longp, "%s", lsys);
    for (int i = 0; i < 60 && off < sizeof longp - 200; i++)
        off += (size_t)snprintf(longp + off, sizeof longp - off, " Quarter %d fees rose %d%%.", i, i % 9 + 1);
    snprintf(longp + off, sizeof longp - off, " Summarize.<|im_end|>\n<|im_start|>assistant\n");
    fe_session *r = new_session(2048, true, 128), *f = new_session(2048, false, 0);
    REQUIRE(r && f);
    static collect_t a, b;
    fe_generate_params ga = params(1, false, &a), gb;
    /* cancel half-way through the prefill, as long as it takes on this machine now (r warmed up
     * first: a first decode allocates buffers) */
    CHECK_STATUS(fe_generate(r, p3b, &ga, NULL), FE_OK, NULL);
    CHECK_STATUS(fe_generate(f, p3b, &ga, NULL), FE_OK, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_STATUS(fe_generate(f, longp, &ga, NULL), FE_OK, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int half_ms = (int)(((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000) / 2);
    ga = params(8, false, &a);
    canceller_t cc = {r, half_ms > 1 ? half_ms : 1};
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &cc);
    fe_status st = fe_generate(r, longp, &ga, NULL);
    pthread_join(th, NULL);
    int32_t n_cached = 0;
    fe_session_cached_tokens(r, NULL, 0, &n_cached);
    fprintf(stderr, "  flash attention: cancelled prefill (%s, after %d ms) left %d tokens cached\n",
            fe_status_str(st), half_ms, n_cached);
    if (st == FE_ERR_CANCELLED) CHECK(n_cached % 128 == 0 && n_cached < n_tokens_of(longp));
    for (int i = 0; i < 2; i++) {
        ga = params(8, i == 1, &a);
        gb = params(8, i == 1, &b);
        CHECK_STATUS(fe_generate(r, i ? p1 : longp, &ga, NULL), FE_OK, NULL);
        CHECK_STATUS(fe_generate(f, i ? p1 : longp, &gb, NULL), FE_OK, NULL);
        CHECK(same(&a, &b));
    }
    fe_session_free(r);
    fe_session_free(f);

    /* state files remember the setting: a flash-attention state loads only into such a session */
    char path[600];
    snprintf(path, sizeof path, "%s/fa.festate", g_dir);
    fe_session *w = new_session(1024, true, 0);
    REQUIRE(w);
    CHECK_STATUS(fe_session_save_prompt(w, lsys, path), FE_OK, NULL);
    fe_session_free(w);
    r = new_session(1024, true, 0);
    f = new_session(1024, false, 0);
    REQUIRE(r && f);
    CHECK_STATUS(fe_session_load_state(r, path), FE_OK, NULL);
    ga = params(12, true, &a);
    gb = params(12, true, &b);
    CHECK_STATUS(fe_generate(r, p1, &ga, NULL), FE_OK, NULL);
    CHECK_STATUS(fe_generate(f, p1, &gb, NULL), FE_OK, NULL);
    CHECK(same(&a, &b));
    CHECK(reused(r) == min32(n_lsys, n1 - 64));
    fe_session_free(r);
    fe_session_free(f);
    g_fa = false;
    fe_session *off_s = new_session(1024, true, 0);
    REQUIRE(off_s);
    CHECK_STATUS(fe_session_load_state(off_s, path), FE_ERR_BAD_MODEL, "flash attention on");
    char path_off[600];
    snprintf(path_off, sizeof path_off, "%s/nofa.festate", g_dir);
    CHECK_STATUS(fe_session_save_prompt(off_s, lsys, path_off), FE_OK, NULL);
    fe_session_free(off_s);
    g_fa = true;
    fe_session *on_s = new_session(1024, true, 0);
    REQUIRE(on_s);
    CHECK_STATUS(fe_session_load_state(on_s, path_off), FE_ERR_BAD_MODEL, "flash attention off");
    fe_session_free(on_s);
    unlink(path);
    unlink(path_off);
    g_fa = false;
}

/* ------------------------------------------------------------------ state files */

/* fe_session_settle: the answer (decoded one at a time) is evaluated again as prompt rows, so the
 * next turn that repeats it reuses it; tokens equal a session without reuse, greedy and seeded,
 * with flash attention off and on (on: a long prompt's settle re-evaluates its last 64 rows). */
static void test_settle(void) {
    for (int fa = 0; fa < 2; fa++) {
        g_fa = fa == 1;
        for (int sampled = 0; sampled < 2; sampled++) {
            fe_session *r = new_session(2048, true, 0), *f = new_session(2048, false, 0);
            REQUIRE(r && f);
            static collect_t a, b;
            static char p1[4096], p2[8192], answer[2048];
            /* flash attention: a prompt of >= 64 tokens (the tiled path) */
            snprintf(p1, sizeof p1, "%s%s<|im_start|>user\nWhat is a bond coupon?<|im_end|>\n<|im_start|>assistant\n",
                     SYS, g_fa ? SYS : "");
            fe_generate_params ga = params(24, sampled, &a);
            CHECK_STATUS(fe_generate(r, p1, &ga, NULL), FE_OK, NULL);
            int32_t n1 = 0, n_cached = 0, n_settled = -1, toks[2048];
            fe_tokenize(g_model, p1, true, true, toks, 2048, &n1);
            CHECK_STATUS(fe_session_cached_tokens(r, NULL, 0, &n_cached), FE_OK, NULL);
            /* the prompt + the decoded answer (the last sampled token is not, after max_tokens) */
            CHECK(n_cached == n1 + a.n - 1 || n_cached == n1 + a.n);
            size_t len = 0;
            CHECK_STATUS(fe_detokenize(g_model, a.tokens, a.n, false, answer, sizeof answer, &len), FE_OK, NULL);
            CHECK_STATUS(fe_session_settle(r, &n_settled), FE_OK, NULL);
            /* off: the answer rows; on (tiled path): the last 64 rows, a chunk on the path */
            CHECK(n_settled == (g_fa ? 64 : n_cached - n1));
            int32_t n_after = 0;
            CHECK_STATUS(fe_session_cached_tokens(r, NULL, 0, &n_after), FE_OK, NULL);
            CHECK(n_after == n_cached);
            CHECK_STATUS(fe_session_settle(r, &n_settled), FE_OK, NULL);
            CHECK(n_settled == 0); /* nothing left */
            snprintf(p2, sizeof p2, "%s%s<|im_end|>\n<|im_start|>user\nAnd its yield?<|im_end|>\n<|im_start|>assistant\n",
                     p1, answer);
            int32_t n2 = 0;
            fe_tokenize(g_model, p2, true, true, toks, 2048, &n2);
            ga = params(12, sampled, &a);
            fe_generate_params gb = params(12, sampled, &b);
            CHECK_STATUS(fe_generate(r, p2, &ga, NULL), FE_OK, NULL);
            CHECK_STATUS(fe_generate(f, p2, &gb, NULL), FE_OK, NULL);
            CHECK(same(&a, &b));
            fprintf(stderr, "  settle fa=%d sampled=%d: prompt %d, cached %d, next turn %d reused %d\n", fa, sampled,
                    n1, n_cached, n2, reused(r));
            /* the answer is reused (as far as the template renders it with the same tokens); on the
             * tiled path the last 64 prompt tokens are evaluated again whatever is cached */
            CHECK(reused(r) > (g_fa ? min32(n_cached, n2 - 64) - 24 : n_cached - 12));
            CHECK(reused(r) <= n2 - (g_fa ? 64 : 2));
            fe_session_free(r);
            fe_session_free(f);
        }
    }
    g_fa = false;
    fe_session *s = new_session(1024, false, 0);
    REQUIRE(s);
    static collect_t c;
    fe_generate_params gp = params(8, false, &c);
    CHECK_STATUS(fe_generate(s, SYS, &gp, NULL), FE_OK, NULL);
    int32_t n = -1;
    CHECK_STATUS(fe_session_settle(s, &n), FE_OK, NULL); /* no reuse: nothing to settle */
    CHECK(n == 0);
    fe_session_free(s);
}

static long file_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

static unsigned char *slurp(const char *path, long *n) {
    *n = file_size(path);
    if (*n < 0) return NULL;
    unsigned char *b = malloc((size_t)*n + 1);
    FILE *fp = fopen(path, "rb");
    if (fread(b, 1, (size_t)*n, fp) != (size_t)*n) *n = -1;
    fclose(fp);
    return b;
}

static void spit(const char *path, const unsigned char *b, long n) {
    FILE *fp = fopen(path, "wb");
    if (n > 0) fwrite(b, 1, (size_t)n, fp);
    fclose(fp);
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void test_state_round_trip_and_corruption(void) {
    char path[600], bad[600];
    snprintf(path, sizeof path, "%s/sys.festate", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.festate", g_dir);
    char p[1024];
    snprintf(p, sizeof p, "%s<|im_start|>user\nWhat is a bond coupon?<|im_end|>\n<|im_start|>assistant\n", SYS);
    fe_session *w = new_session(512, true, 0);
    REQUIRE(w);
    CHECK_STATUS(fe_session_save_prompt(w, SYS, path), FE_OK, NULL);
    CHECK_STATUS(fe_session_save_prompt(w, "", path), FE_ERR_INVALID_ARG, "no tokens");
    CHECK_STATUS(fe_session_save_prompt(w, SYS, NULL), FE_ERR_INVALID_ARG, "path");
    int32_t n_sys = 0, toks[512];
    fe_tokenize(g_model, SYS, true, true, toks, 512, &n_sys);
    fe_session_free(w);

    static collect_t a, b;
    fe_session *r = new_session(512, true, 0), *f = new_session(512, false, 0);
    REQUIRE(r && f);
    CHECK_STATUS(fe_session_load_state(r, path), FE_OK, NULL);
    int32_t n_cached = 0;
    fe_session_cached_tokens(r, NULL, 0, &n_cached);
    CHECK(n_cached == n_sys);
    for (int sampled = 0; sampled < 2; sampled++) {
        if (sampled) CHECK_STATUS(fe_session_load_state(r, path), FE_OK, NULL);
        fe_generate_params ga = params(12, sampled, &a), gb = params(12, sampled, &b);
        CHECK_STATUS(fe_generate(r, p, &ga, NULL), FE_OK, NULL);
        CHECK_STATUS(fe_generate(f, p, &gb, NULL), FE_OK, NULL);
        CHECK(same(&a, &b));
        CHECK(reused(r) >= n_sys - 2);
    }
    /* a session smaller than the prefix refuses it */
    fe_session *tiny = new_session(16, true, 0);
    CHECK_STATUS(fe_session_load_state(tiny, path), FE_ERR_CONTEXT_OVERFLOW, "n_ctx");
    fe_session_free(tiny);

    long n = 0;
    unsigned char *orig = slurp(path, &n);
    REQUIRE(orig && n > 200);
    unsigned char *buf = malloc((size_t)n);
    /* truncated at several points, including inside the header, the tokens, the payload */
    long cuts[] = {0, 7, 100, 167, 231, 232, 234, 232 + 4 * n_sys + 10, n / 2, n - 33, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(bad, orig, cuts[i]);
        fe_status st = fe_session_load_state(r, bad);
        if (st != FE_ERR_BAD_MODEL) fprintf(stderr, "  cut at %ld: %s (%s)\n", cuts[i], fe_status_str(st), fe_last_error());
        CHECK(st == FE_ERR_BAD_MODEL);
        CHECK(strstr(fe_last_error(), cuts[i] == 0 ? "empty" : "truncated") != NULL ||
              strstr(fe_last_error(), "size mismatch") != NULL);
    }
    /* one flipped byte anywhere: header, tokens, payload, checksum */
    long flips[] = {0, 9, 20, 100, 150, 168, 232 + 4 * n_sys + 3, n / 2, n - 40, n - 1};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(buf, orig, (size_t)n);
        buf[flips[i]] ^= 0x10;
        spit(bad, buf, n);
        fe_status st = fe_session_load_state(r, bad);
        if (st != FE_ERR_BAD_MODEL) fprintf(stderr, "  flip at %ld: %s\n", flips[i], fe_status_str(st));
        CHECK(st == FE_ERR_BAD_MODEL);
        CHECK(strstr(fe_last_error(), "refused") != NULL);
    }
    /* named header fields */
    struct { long at; uint32_t v; const char *needle; } fields[] = {
        {8, 1, "version"},          {12, 4096, "header size"},   {152, 0xFFFFFFFFu, "token count"},
        {152, 0, "token count"},    {152, 1000000, "truncated"}, {160, 0xFFFFFFFFu, "size mismatch"},
        {164, 0x7FFFFFFFu, "size mismatch"},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        memcpy(buf, orig, (size_t)n);
        put_u32(buf + fields[i].at, fields[i].v);
        spit(bad, buf, n);
        CHECK_STATUS(fe_session_load_state(r, bad), FE_ERR_BAD_MODEL, fields[i].needle);
    }
    memcpy(buf, orig, (size_t)n);
    memcpy(buf, "GGUF", 4);
    spit(bad, buf, n);
    CHECK_STATUS(fe_session_load_state(r, bad), FE_ERR_BAD_MODEL, "magic");
    /* after a refused file the cache is empty and generation still matches */
    fe_session_cached_tokens(r, NULL, 0, &n_cached);
    CHECK(n_cached == 0);
    fe_generate_params ga = params(8, false, &a), gb = params(8, false, &b);
    CHECK_STATUS(fe_generate(r, p, &ga, NULL), FE_OK, NULL);
    CHECK_STATUS(fe_generate(f, p, &gb, NULL), FE_OK, NULL);
    CHECK(same(&a, &b));
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none.festate", g_dir);
    CHECK_STATUS(fe_session_load_state(r, missing), FE_ERR_FILE_NOT_FOUND, "none.festate");
    /* saving while a request runs is refused */
    ga = params(8, false, &a);
    CHECK_STATUS(fe_request_start(r, p, &ga), FE_OK, NULL);
    CHECK_STATUS(fe_session_save_prompt(r, SYS, path), FE_ERR_BUSY, NULL);
    CHECK_STATUS(fe_session_load_state(r, path), FE_ERR_BUSY, NULL);
    fe_request_end(r);
    /* save_chat: a later chat request with the same system message reuses it */
    fe_chat_message sys = {"system", "You are a careful financial analyst."};
    fe_chat_message two[2] = {{"system", "You are a careful financial analyst."}, {"user", "What is a bond coupon?"}};
    CHECK_STATUS(fe_session_save_chat(r, &sys, 1, path), FE_OK, NULL);
    CHECK_STATUS(fe_session_load_state(f, path), FE_OK, NULL);
    fe_session *r2 = new_session(512, true, 0);
    CHECK_STATUS(fe_session_load_state(r2, path), FE_OK, NULL);
    ga = params(8, false, &a);
    gb = params(8, false, &b);
    CHECK_STATUS(fe_request_start_chat(r2, two, 2, &ga), FE_OK, NULL);
    fe_token_event ev;
    while (fe_request_next(r2, &ev) == FE_OK && !ev.done)
        if (ev.token >= 0 && a.n < MAXT) a.tokens[a.n++] = ev.token;
    CHECK(reused(r2) > 10);
    fe_session *f2 = new_session(512, false, 0);
    CHECK_STATUS(fe_request_start_chat(f2, two, 2, &gb), FE_OK, NULL);
    while (fe_request_next(f2, &ev) == FE_OK && !ev.done)
        if (ev.token >= 0 && b.n < MAXT) b.tokens[b.n++] = ev.token;
    CHECK(a.n > 0 && same(&a, &b));
    fe_session_free(r2);
    fe_session_free(f2);
    free(buf);
    free(orig);
    unlink(bad);
    unlink(path);
    fe_session_free(r);
    fe_session_free(f);
}

int main(int argc, char **argv) {
    const char *path = fe_test_model(argc, argv);
    snprintf(g_dir, sizeof g_dir, "%s", argc > 2 ? argv[2] : ".");
    g_model = fe_test_load(path);
    RUN(test_reuse_same_tokens());
    RUN(test_reuse_off_and_profile());
    RUN(test_after_cancel());
    RUN(test_after_context_full_and_stop());
    RUN(test_state_round_trip_and_corruption());
    RUN(test_flash_attn_reuse());
    RUN(test_settle());
    fe_model_free(g_model);
    return fe_test_finish();
}
