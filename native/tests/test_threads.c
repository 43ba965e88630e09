/* Threads: cancellation from a second thread (during generation and during prefill) and
 * two sessions sharing one model concurrently. argv[1] = SmolLM2 GGUF. */
#include "finllm_edge.h"
#include "fe_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static fe_model *g_model;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static fe_session *new_session(uint32_t n_ctx) {
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = n_ctx;
    sp.n_threads = 1;
    fe_session *s = NULL;
    if (fe_session_create(g_model, &sp, &s) != FE_OK) fprintf(stderr, "session: %s\n", fe_last_error());
    return s;
}

/* --- cancel during generation: the other thread cancels once tokens are flowing --- */
typedef struct {
    fe_session *s;
    atomic_int tokens;
    atomic_int done;
} gen_state;

static bool count_token(const char *p, size_t n, int32_t t, void *user) {
    (void)p; (void)n; (void)t;
    atomic_fetch_add(&((gen_state *)user)->tokens, 1);
    return true;
}

static void *cancel_after_tokens(void *arg) {
    gen_state *st = (gen_state *)arg;
    while (atomic_load(&st->tokens) < 5 && !atomic_load(&st->done)) sleep_ms(1);
    fe_session_cancel(st->s);
    return NULL;
}

static void test_cancel_during_generation(void) {
    gen_state st;
    st.s = new_session(4096);
    REQUIRE(st.s != NULL);
    atomic_init(&st.tokens, 0);
    atomic_init(&st.done, 0);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, cancel_after_tokens, &st) == 0);
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 3000;
    gp.ignore_eos = true;
    gp.on_token = count_token;
    gp.user_data = &st;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(st.s, "Once upon a time in a bank,", &gp, &r), FE_ERR_CANCELLED, "cancelled");
    atomic_store(&st.done, 1);
    pthread_join(th, NULL);
    CHECK(r.stop_reason == FE_STOP_CANCELLED);
    CHECK(r.n_generated >= 5 && r.n_generated < 3000);
    /* the next call starts afresh: the cancel request does not stick */
    gp.on_token = NULL;
    gp.max_tokens = 3;
    CHECK_STATUS(fe_generate(st.s, "Once upon a time", &gp, &r), FE_OK, NULL);
    CHECK(r.n_generated == 3);
    fe_session_free(st.s);
}

/* --- cancel during prefill: a long prompt, cancelled repeatedly until the call returns --- */
typedef struct {
    fe_session *s;
    atomic_int done;
} prefill_state;

static void *keep_cancelling(void *arg) {
    prefill_state *st = (prefill_state *)arg;
    while (!atomic_load(&st->done)) {
        fe_session_cancel(st->s);
        sleep_ms(2);
    }
    return NULL;
}

static void test_cancel_during_prefill(void) {
    prefill_state st;
    st.s = new_session(4096);
    REQUIRE(st.s != NULL);
    atomic_init(&st.done, 0);
    static char prompt[65536];
    prompt[0] = 0;
    for (int i = 0; i < 120; i++) strcat(prompt, "The central bank kept rates unchanged, citing sticky core inflation. ");
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, keep_cancelling, &st) == 0);
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 8;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(st.s, prompt, &gp, &r), FE_ERR_CANCELLED, "prefill");
    atomic_store(&st.done, 1);
    pthread_join(th, NULL);
    CHECK(r.n_generated == 0);
    CHECK(r.n_prompt > 1000);
    fe_session_free(st.s);
}

/* --- two sessions on two threads share one model --- */
typedef struct {
    int32_t toks[32];
    int n;
    fe_status st;
} shared_run;

static bool keep(const char *p, size_t n, int32_t t, void *user) {
    (void)p; (void)n;
    shared_run *r = (shared_run *)user;
    if (r->n < 32) r->toks[r->n++] = t;
    return true;
}

static void *run_session(void *arg) {
    shared_run *out = (shared_run *)arg;
    fe_session *s = new_session(256);
    if (!s) {
        out->st = FE_ERR_INTERNAL;
        return NULL;
    }
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 12;
    gp.ignore_eos = true;
    gp.on_token = keep;
    gp.user_data = out;
    out->st = fe_generate(s, "The balance sheet shows", &gp, NULL);
    fe_session_free(s);
    return NULL;
}

static void test_two_sessions_share_a_model(void) {
    shared_run ref, a, b;
    memset(&ref, 0, sizeof ref);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    run_session(&ref);
    CHECK(ref.st == FE_OK && ref.n == 12);
    pthread_t ta, tb;
    REQUIRE(pthread_create(&ta, NULL, run_session, &a) == 0);
    REQUIRE(pthread_create(&tb, NULL, run_session, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.st == FE_OK && b.st == FE_OK);
    CHECK(a.n == 12 && b.n == 12);
    CHECK(memcmp(a.toks, ref.toks, sizeof ref.toks) == 0);
    CHECK(memcmp(b.toks, ref.toks, sizeof ref.toks) == 0);
}

/* fe_last_error is per thread */
static void *fail_on_other_thread(void *arg) {
    (void)arg;
    fe_session_reset(NULL);
    return NULL;
}

static void test_last_error_is_thread_local(void) {
    fe_clear_error();
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, fail_on_other_thread, NULL) == 0);
    pthread_join(th, NULL);
    CHECK(strcmp(fe_last_error(), "") == 0);
}

int main(int argc, char **argv) {
    const char *path = fe_test_model(argc, argv);
    g_model = fe_test_load(path);
    RUN(test_cancel_during_generation());
    RUN(test_cancel_during_prefill());
    RUN(test_two_sessions_share_a_model());
    RUN(test_last_error_is_thread_local());
    fe_model_free(g_model);
    return fe_test_finish();
}
