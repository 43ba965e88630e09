/* Drift references and monitors (finllm_edge.h "drift monitoring"): the KL against a direct
 * computation, window boundaries, deterministic calibration, save/load and refused files, the
 * tokenizer check, the session hook and the scheduler's (same counts as a session; submits from
 * several threads while another reads the monitor).
 *
 *   test_drift MODEL DIR                 the tests (DIR: scratch folder)
 *   test_drift --stream REF STREAM       probe: one request per line of STREAM (token ids), prints
 *                                        "<kl %.17g> <state>" after each (tests/test_drift.py compares
 *                                        it with Python and JNI) */
#include "finllm_edge.h"
#include "fe_test.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define NV 500
#define NB 32
#define NN 20
#define W 50

static uint32_t lcg = 12345;
static int32_t next_token(int skew) {
    lcg = lcg * 1664525u + 1013904223u;
    uint32_t r = (lcg >> 8) % NV;
    return (int32_t)(skew ? (r * r) % NV : r % 60);  /* in-domain: ids 0..59; skewed: spread out */
}

static const char *ZERO_SHA = "0000000000000000000000000000000000000000000000000000000000000000";

static fe_drift_ref *make_ref(void) {
    int32_t toks[4000];
    for (int i = 0; i < 4000; i++) toks[i] = next_token(0);
    fe_drift_params p = fe_drift_default_params();
    p.n_buckets = NB;
    p.n_named = NN;
    p.window_tokens = W;
    p.smoothing = 0.5;
    fe_drift_ref *ref = NULL;
    if (fe_drift_ref_build(ZERO_SHA, NV, toks, 4000, &p, &ref) != FE_OK) return NULL;
    return ref;
}

/* KL(window || ref) straight from the definition. */
static double direct_kl(const fe_drift_ref *ref, const int32_t *window, int n, const double *q) {
    double c[NB] = {0};
    for (int i = 0; i < n; i++) c[fe_drift_ref_bucket(ref, window[i])] += 1;
    double z = n + 0.5 * NB, kl = 0;
    for (int b = 0; b < NB; b++) {
        double p = (c[b] + 0.5) / z;
        kl += p * log(p / q[b]);
    }
    return kl;
}

static void test_kl_and_window(void) {
    fe_drift_ref *ref = make_ref();
    REQUIRE(ref != NULL);
    /* q from the reference's definition, recomputed here */
    double q[NB] = {0};
    lcg = 12345;
    for (int i = 0; i < 4000; i++) q[fe_drift_ref_bucket(ref, next_token(0))] += 1;
    for (int b = 0; b < NB; b++) q[b] = (q[b] + 0.5) / (4000 + 0.5 * NB);
    fe_drift_monitor *m = NULL;
    CHECK_STATUS(fe_drift_monitor_new(ref, &m), FE_OK, NULL);
    int32_t all[20000];
    int n_all = 0;
    fe_drift_status st;
    for (int r = 0; r < 400 && n_all < 19000; r++) {
        int32_t req[40];
        int len = (int)(lcg % 40);
        for (int i = 0; i < len; i++) req[i] = all[n_all++] = next_token(r > 200);
        CHECK_STATUS(fe_drift_observe(m, req, (size_t)len), FE_OK, NULL);
        fe_drift_get_status(m, &st);
        int n = n_all < W ? n_all : W;
        CHECK(st.n_window == n);
        double d = direct_kl(ref, all + n_all - n, n, q);
        CHECK(fabs(st.kl - d) <= 1e-9 * (1 + d));
        if (n < W) CHECK(st.state == FE_DRIFT_NONE && st.n_evaluations == 0);
    }
    CHECK(st.n_requests == 400 || n_all >= 19000);
    CHECK(st.n_tokens == n_all);
    int32_t bad = NV;
    CHECK_STATUS(fe_drift_observe(m, &bad, 1), FE_ERR_INVALID_ARG, "outside the vocabulary");
    fe_drift_status after;
    fe_drift_get_status(m, &after);
    CHECK(after.n_tokens == st.n_tokens);  /* nothing counted */
    fe_drift_monitor_reset(m);
    fe_drift_get_status(m, &after);
    CHECK(after.n_window == 0 && after.n_requests == 0 && after.first_drift_request == -1);
    fe_drift_monitor_free(m);
    fe_drift_ref_free(ref);
}

static void test_calibrate_save_load(const char *dir) {
    fe_drift_ref *ref = make_ref();
    REQUIRE(ref != NULL);
    int32_t toks[3000], lens[100];
    for (int i = 0; i < 3000; i++) toks[i] = next_token(0);
    for (int i = 0; i < 100; i++) lens[i] = 30;
    double k1[500], k2[500];
    CHECK_STATUS(fe_drift_ref_window_kls(ref, toks, lens, 100, 7, k1, 500), FE_OK, NULL);
    CHECK_STATUS(fe_drift_ref_window_kls(ref, toks, lens, 100, 7, k2, 500), FE_OK, NULL);
    CHECK(memcmp(k1, k2, sizeof k1) == 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/test_drift.fedrift", dir);
    CHECK_STATUS(fe_drift_ref_save(ref, path), FE_ERR_INVALID_ARG, "not calibrated");
    CHECK_STATUS(fe_drift_ref_calibrate(ref, k1, 500, 0.01, 0.05, 7), FE_ERR_INVALID_ARG, "0 < drift <= watch");
    CHECK_STATUS(fe_drift_ref_calibrate(ref, k1, 500, 0.05, 0.01, 7), FE_OK, NULL);
    fe_drift_ref_info info;
    fe_drift_ref_get_info(ref, &info);
    int above = 0;
    for (int i = 0; i < 500; i++) above += k1[i] >= info.drift_threshold;
    CHECK(above >= 1 && above <= 5);  /* ~1% of 500, ties included */
    CHECK_STATUS(fe_drift_ref_save(ref, path), FE_OK, NULL);
    fe_drift_ref *back = NULL;
    CHECK_STATUS(fe_drift_ref_load(path, &back), FE_OK, NULL);
    fe_drift_ref_info info2;
    if (back) fe_drift_ref_get_info(back, &info2);
    CHECK(back && info2.drift_threshold == info.drift_threshold && info2.params.n_named == info.params.n_named);
    fe_drift_ref_free(back);
    /* refused files */
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/test_drift_bad.fedrift", dir);
    struct { size_t len; size_t flip; const char *needle; } cases[] = {
        {n - 1, 0, "truncated"}, {100, 0, "truncated header"}, {n, 1, "bad magic"}, {n, 200, "checksum"},
        {n, 9, "version"}, {4, 0, "too short"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        unsigned char tmp[4096];
        memcpy(tmp, buf, n);
        if (cases[c].flip) tmp[cases[c].flip] ^= 0x5a;
        f = fopen(bad, "wb");
        fwrite(tmp, 1, cases[c].len, f);
        fclose(f);
        fe_drift_ref *r2 = NULL;
        CHECK_STATUS(fe_drift_ref_load(bad, &r2), FE_ERR_BAD_MODEL, cases[c].needle);
        CHECK(r2 == NULL);
    }
    snprintf(bad, sizeof bad, "%s/missing.fedrift", dir);
    fe_drift_ref *r3 = NULL;
    CHECK_STATUS(fe_drift_ref_load(bad, &r3), FE_ERR_FILE_NOT_FOUND, "cannot open");
    fe_drift_ref_free(ref);
}

static void test_session(const char *model_path, const char *dir) {
    fe_model *model = NULL;
    fe_model_params mp = fe_model_default_params();
    REQUIRE(fe_model_load(model_path, &mp, &model) == FE_OK);
    fe_session *s = NULL;
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = 256;
    REQUIRE(fe_session_create(model, &sp, &s) == FE_OK);
    fe_model_info mi;
    fe_model_get_info(model, &mi);
    char sha[65];
    CHECK_STATUS(fe_model_tokenizer_sha256(model, sha), FE_OK, NULL);
    int32_t toks[600];
    int32_t n = 0;
    CHECK_STATUS(fe_tokenize(model, "Revenue rose eight percent and the margin improved. " "Free cash flow was strong.",
                             false, false, toks, 600, &n), FE_OK, NULL);
    int32_t stream[3000];
    for (int i = 0; i < 3000; i++) stream[i] = toks[i % n];
    fe_drift_params p = fe_drift_default_params();
    p.window_tokens = 16;
    char path[1024];
    int32_t lens[100];
    for (int i = 0; i < 100; i++) lens[i] = 30;
    double kls[100];
    for (int pass = 0; pass < 2; pass++) {  /* 0: another tokenizer's reference, 1: this model's */
        fe_drift_ref *ref = NULL;
        REQUIRE(fe_drift_ref_build(pass ? sha : ZERO_SHA, mi.n_vocab, stream, 3000, &p, &ref) == FE_OK);
        CHECK_STATUS(fe_drift_ref_window_kls(ref, stream, lens, 100, 1, kls, 100), FE_OK, NULL);
        CHECK_STATUS(fe_drift_ref_calibrate(ref, kls, 100, 0.05, 0.01, 1), FE_OK, NULL);
        snprintf(path, sizeof path, "%s/test_drift_session%d.fedrift", dir, pass);
        CHECK_STATUS(fe_drift_ref_save(ref, path), FE_OK, NULL);
        fe_drift_ref_free(ref);
    }
    snprintf(path, sizeof path, "%s/test_drift_session0.fedrift", dir);
    CHECK_STATUS(fe_session_enable_drift(s, path), FE_ERR_BAD_MODEL, "another tokenizer");
    CHECK(fe_session_drift_monitor(s) == NULL);
    snprintf(path, sizeof path, "%s/test_drift_session1.fedrift", dir);
    CHECK_STATUS(fe_session_enable_drift(s, path), FE_OK, NULL);
    fe_drift_monitor *m = fe_session_drift_monitor(s);
    REQUIRE(m != NULL);
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 1;
    const char *prompt = "Free cash flow was strong.";
    int32_t pt[64], np = 0;
    fe_tokenize(model, prompt, true, true, pt, 64, &np);
    int n_control = 0;
    for (int i = 0; i < np; i++) n_control += pt[i] == fe_token_bos(model);
    CHECK_STATUS(fe_generate(s, prompt, &gp, NULL), FE_OK, NULL);
    fe_drift_status ds;
    fe_drift_get_status(m, &ds);
    CHECK(ds.n_requests == 1 && ds.n_tokens == np - n_control);
    CHECK_STATUS(fe_generate(s, prompt, &gp, NULL), FE_OK, NULL);  /* shares < 16 tokens: counted again */
    fe_drift_get_status(m, &ds);
    CHECK(ds.n_requests == 2 && ds.n_tokens == 2 * (np - n_control));
    gp.max_tokens = 0;  /* prefill-only requests are not counted */
    CHECK_STATUS(fe_generate(s, "Something else entirely.", &gp, NULL), FE_OK, NULL);
    fe_drift_get_status(m, &ds);
    CHECK(ds.n_requests == 2);
    char *json = fe_drift_monitor_json(m);
    CHECK(json && strstr(json, "\"schema\":\"finllm-edge/drift-state\"") && strstr(json, "\"samples\"") == NULL);
    fe_free(json);
    CHECK_STATUS(fe_session_enable_drift(s, NULL), FE_OK, NULL);
    CHECK(fe_session_drift_monitor(s) == NULL);
    fe_session_free(s);
    fe_model_free(model);
}

/* The scheduler counts what a session counts: the same requests (prompts sharing a long prefix,
 * chats, a prefill-only one) give the same status on both; then 4 threads submit while a fifth
 * reads status and JSON (the monitor locks itself; ASan/UBSan builds run this too). */
#define N_SUBMITTERS 4
#define PER_THREAD 6
typedef struct {
    fe_scheduler *sch;
    int idx;
    int failed;
} submitter;

static const char *SYSTEM =
    "You are a careful financial analyst. Answer in one sentence, cite the figure you use, and say "
    "when the report does not contain it. Quarterly revenue, margins and cash flow are the usual topics.";

static void *submit_some(void *arg) {
    submitter *t = (submitter *)arg;
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 2;
    for (int i = 0; i < PER_THREAD; i++) {
        char q[160];
        snprintf(q, sizeof q, "Thread %d question %d: what was the operating margin?", t->idx, i);
        fe_chat_message msgs[2] = {{"system", SYSTEM}, {"user", q}};
        fe_sched_request *rq = NULL;
        if (fe_sched_submit_chat(t->sch, msgs, 2, &gp, &rq) != FE_OK) { t->failed++; continue; }
        fe_token_event ev;
        while (fe_sched_next(rq, &ev) == FE_OK && !ev.done) {}
        fe_sched_request_free(rq);
    }
    return NULL;
}

static atomic_int readers_stop;
static void *read_monitor(void *arg) {
    fe_scheduler *sch = (fe_scheduler *)arg;
    long reads = 0;
    while (!atomic_load(&readers_stop)) {
        fe_drift_monitor *m = fe_scheduler_drift_monitor(sch);
        fe_drift_status ds;
        if (m && fe_drift_get_status(m, &ds) == FE_OK) reads++;
        char *json = m ? fe_drift_monitor_json(m) : NULL;
        fe_free(json);
    }
    return (void *)reads;
}

static void run_to_end(fe_sched_request *rq) {
    fe_token_event ev;
    while (fe_sched_next(rq, &ev) == FE_OK && !ev.done) {}
    fe_sched_request_free(rq);
}

static void test_scheduler(const char *model_path, const char *dir) {
    fe_model *model = NULL;
    fe_model_params mp = fe_model_default_params();
    REQUIRE(fe_model_load(model_path, &mp, &model) == FE_OK);
    fe_scheduler_params scp = fe_scheduler_default_params();
    scp.n_ctx = 256;
    scp.n_slots = 4;
    fe_scheduler *sch = NULL;
    REQUIRE(fe_scheduler_create(model, &scp, &sch) == FE_OK);
    fe_session *s = NULL;
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = 256;
    REQUIRE(fe_session_create(model, &sp, &s) == FE_OK);
    char bad[1024], good[1024];
    snprintf(bad, sizeof bad, "%s/test_drift_session0.fedrift", dir);   /* written by test_session */
    snprintf(good, sizeof good, "%s/test_drift_session1.fedrift", dir);
    CHECK_STATUS(fe_scheduler_enable_drift(NULL, good), FE_ERR_INVALID_ARG, "NULL");
    CHECK_STATUS(fe_scheduler_enable_drift(sch, bad), FE_ERR_BAD_MODEL, "another tokenizer");
    CHECK(fe_scheduler_drift_monitor(sch) == NULL);
    CHECK_STATUS(fe_scheduler_enable_drift(sch, good), FE_OK, NULL);
    fe_drift_monitor *m = fe_scheduler_drift_monitor(sch);
    REQUIRE(m != NULL);
    CHECK_STATUS(fe_scheduler_enable_drift(sch, "/nonexistent/ref.fedrift"), FE_ERR_FILE_NOT_FOUND, NULL);
    CHECK(fe_scheduler_drift_monitor(sch) == m);  /* a refused file keeps the monitor */
    CHECK_STATUS(fe_session_enable_drift(s, good), FE_OK, NULL);
    fe_drift_monitor *ms = fe_session_drift_monitor(s);

    /* the same requests on both, in order */
    char long_prompt[2][600];
    for (int k = 0; k < 2; k++)
        snprintf(long_prompt[k], sizeof long_prompt[k], "%s Question: %s", SYSTEM,
                 k ? "Did free cash flow cover the dividend?" : "What was revenue growth?");
    fe_chat_message chat[3] = {{"system", SYSTEM}, {"user", "Summarise the margin trend."},
                               {"assistant", "Margins rose."}};
    fe_chat_message chat2[4] = {chat[0], chat[1], chat[2], {"user", "And net debt, in euros?"}};
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 2;
    for (int step = 0; step < 5; step++) {
        fe_sched_request *rq = NULL;
        fe_generate_params g = gp;
        if (step == 4) g.max_tokens = 0;  /* prefill only: counted by neither */
        if (step < 2 || step == 4) {
            REQUIRE(fe_sched_submit(sch, long_prompt[step % 2], &g, &rq) == FE_OK);
            CHECK_STATUS(fe_generate(s, long_prompt[step % 2], &g, NULL), FE_OK, NULL);
        } else {
            fe_chat_message *c = step == 2 ? chat : chat2;
            size_t nc = step == 2 ? 2 : 4;
            REQUIRE(fe_sched_submit_chat(sch, c, nc, &g, &rq) == FE_OK);
            CHECK_STATUS(fe_request_start_chat(s, c, nc, &g), FE_OK, NULL);
            fe_token_event ev;
            while (fe_request_next(s, &ev) == FE_OK && !ev.done) {}
        }
        run_to_end(rq);
        fe_drift_status a, b;
        fe_drift_get_status(m, &a);
        fe_drift_get_status(ms, &b);
        CHECK(a.n_requests == b.n_requests && a.n_tokens == b.n_tokens && a.kl == b.kl && a.state == b.state);
        CHECK(a.n_requests == (step < 4 ? step + 1 : 4));
    }
    fe_drift_status before;
    fe_drift_get_status(m, &before);
    CHECK(before.n_tokens > 0);

    /* submits from several threads while another reads */
    pthread_t rd, th[N_SUBMITTERS];
    submitter sub[N_SUBMITTERS];
    atomic_store(&readers_stop, 0);
    pthread_create(&rd, NULL, read_monitor, sch);
    for (int i = 0; i < N_SUBMITTERS; i++) {
        sub[i] = (submitter){sch, i, 0};
        pthread_create(&th[i], NULL, submit_some, &sub[i]);
    }
    int failed = 0;
    for (int i = 0; i < N_SUBMITTERS; i++) {
        pthread_join(th[i], NULL);
        failed += sub[i].failed;
    }
    atomic_store(&readers_stop, 1);
    void *reads = NULL;
    pthread_join(rd, &reads);
    CHECK(failed == 0);
    CHECK((long)reads > 0);
    fe_drift_status after;
    fe_drift_get_status(m, &after);
    CHECK(after.n_requests == before.n_requests + N_SUBMITTERS * PER_THREAD);
    /* every question's user message, tokenized as the hook does it */
    int64_t expect = 0;
    for (int t = 0; t < N_SUBMITTERS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            char q[160];
            int32_t toks[128], n = 0;
            snprintf(q, sizeof q, "Thread %d question %d: what was the operating margin?", t, i);
            REQUIRE(fe_tokenize(model, q, false, false, toks, 128, &n) == FE_OK);
            expect += n;
        }
    CHECK(after.n_tokens == before.n_tokens + expect);

    CHECK_STATUS(fe_scheduler_enable_drift(sch, NULL), FE_OK, NULL);
    CHECK(fe_scheduler_drift_monitor(sch) == NULL);
    fe_sched_request *rq = NULL;
    REQUIRE(fe_sched_submit(sch, "After detaching.", &gp, &rq) == FE_OK);  /* nothing to count into */
    run_to_end(rq);
    CHECK_STATUS(fe_scheduler_enable_drift(sch, good), FE_OK, NULL);  /* freed with the scheduler */
    fe_session_free(s);
    fe_scheduler_free(sch);
    fe_model_free(model);
}

static int stream_probe(const char *ref_path, const char *stream_path) {
    fe_drift_ref *ref = NULL;
    if (fe_drift_ref_load(ref_path, &ref) != FE_OK) {
        fprintf(stderr, "%s\n", fe_last_error());
        return 2;
    }
    fe_drift_monitor *m = NULL;
    fe_drift_monitor_new(ref, &m);
    FILE *f = fopen(stream_path, "r");
    if (!f || !m) return 2;
    static int32_t toks[1 << 16];
    char line[1 << 18];
    while (fgets(line, sizeof line, f)) {
        size_t n = 0;
        for (char *p = line; *p && n < (1 << 16);) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            toks[n++] = (int32_t)v;
            p = end;
        }
        if (fe_drift_observe(m, toks, n) != FE_OK) return 3;
        fe_drift_status st;
        fe_drift_get_status(m, &st);
        printf("%.17g %s\n", st.kl, fe_drift_state_str(st.state));
    }
    fclose(f);
    fe_drift_monitor_free(m);
    fe_drift_ref_free(ref);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--stream") == 0) return stream_probe(argv[2], argv[3]);
    if (argc < 3 || !argv[1][0]) {
        fprintf(stderr, "usage: test_drift MODEL DIR (configure with FE_TEST_MODEL)\n");
        return 1;
    }
    RUN(test_kl_and_window());
    RUN(test_calibrate_save_load(argv[2]));
    RUN(test_session(argv[1], argv[2]));
    RUN(test_scheduler(argv[1], argv[2]));
    return fe_test_finish();
}
