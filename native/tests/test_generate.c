/* Generation with SmolLM2: model info, tokenize/detokenize, chat template, streaming
 * order, stop from the callback, stop strings, context overflow, context full, profile,
 * sampling determinism, reset. argv[1] = SmolLM2 GGUF. */
#include "finllm_edge.h"
#include "fe_test.h"

static fe_model *g_model;

typedef struct {
    int32_t tokens[1024];
    int n;
    char text[16384];
    size_t len;
    int stop_after; /* return false on this call (1-based), 0 = never */
} collect_t;

static bool collect(const char *piece, size_t n, int32_t token, void *user) {
    collect_t *c = (collect_t *)user;
    if (c->n < 1024) c->tokens[c->n] = token;
    c->n++;
    if (c->len + n < sizeof c->text) {
        memcpy(c->text + c->len, piece, n);
        c->len += n;
        c->text[c->len] = 0;
    }
    return !(c->stop_after && c->n >= c->stop_after);
}

static fe_session *new_session(uint32_t n_ctx) {
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = n_ctx;
    sp.n_threads = 1;
    fe_session *s = NULL;
    if (fe_session_create(g_model, &sp, &s) != FE_OK) fprintf(stderr, "session: %s\n", fe_last_error());
    return s;
}

static void test_model_info(void) {
    fe_model_info info;
    REQUIRE(fe_model_get_info(g_model, &info) == FE_OK);
    CHECK(strlen(info.desc) > 0);
    CHECK(info.n_vocab == 49152);
    CHECK(info.n_params > 100000000ull && info.n_params < 200000000ull);
    CHECK(info.bits_per_weight > 4.0 && info.bits_per_weight < 8.0);
    CHECK(info.file_size_bytes > info.size_bytes / 2);
    CHECK(info.n_ctx_train > 0);
    CHECK(info.has_chat_template);
    CHECK(info.load_ms > 0.0);
    CHECK(fe_token_eos(g_model) >= 0);
    CHECK(fe_token_is_eog(g_model, fe_token_eos(g_model)));
}

static void test_tokenize_roundtrip(void) {
    const char *text = "The 10-year Treasury yield rose 15 bp to 4.25% after the CPI print.";
    int32_t toks[128];
    int32_t n = 0;
    CHECK_STATUS(fe_tokenize(g_model, text, false, false, toks, 128, &n), FE_OK, NULL);
    REQUIRE(n > 5 && n < 64);
    char buf[256];
    size_t len = 0;
    CHECK_STATUS(fe_detokenize(g_model, toks, n, false, buf, sizeof buf, &len), FE_OK, NULL);
    CHECK(len == strlen(text));
    CHECK(strcmp(buf, text) == 0);
    /* too small: the size needed comes back */
    int32_t need = 0;
    CHECK_STATUS(fe_tokenize(g_model, text, false, false, toks, 2, &need), FE_ERR_BUFFER_TOO_SMALL, "need room");
    CHECK(need == n);
    size_t need_b = 0;
    CHECK_STATUS(fe_detokenize(g_model, toks, n, false, buf, 4, &need_b), FE_ERR_BUFFER_TOO_SMALL, "need");
    CHECK(need_b == strlen(text));
    /* special tokens are parsed only when asked */
    int32_t a = 0, b = 0;
    CHECK_STATUS(fe_tokenize(g_model, "<|im_start|>", false, true, toks, 128, &a), FE_OK, NULL);
    CHECK_STATUS(fe_tokenize(g_model, "<|im_start|>", false, false, toks, 128, &b), FE_OK, NULL);
    CHECK(a == 1 && b > 1);
    CHECK_STATUS(fe_tokenize(g_model, "", false, false, toks, 128, &n), FE_OK, NULL);
    CHECK(n == 0);
}

static void test_chat_template(void) {
    fe_chat_message msgs[2] = {{"system", "You are a careful financial analyst."},
                               {"user", "What is a bond coupon?"}};
    char buf[1024];
    size_t len = 0;
    CHECK_STATUS(fe_chat_format(g_model, msgs, 2, true, buf, sizeof buf, &len), FE_OK, NULL);
    CHECK(len == strlen(buf));
    CHECK(strstr(buf, "<|im_start|>system\nYou are a careful financial analyst.<|im_end|>") != NULL);
    CHECK(strstr(buf, "<|im_start|>user\nWhat is a bond coupon?<|im_end|>") != NULL);
    const char *tail = "<|im_start|>assistant\n";
    CHECK(len > strlen(tail) && strcmp(buf + len - strlen(tail), tail) == 0);
    size_t need = 0;
    CHECK_STATUS(fe_chat_format(g_model, msgs, 2, true, buf, 10, &need), FE_ERR_BUFFER_TOO_SMALL, "need");
    CHECK(need == len);
    size_t len2 = 0;
    CHECK_STATUS(fe_chat_format(g_model, msgs, 2, false, buf, sizeof buf, &len2), FE_OK, NULL);
    CHECK(len2 < len);
}

static const char *PROMPT =
    "<|im_start|>user\nExplain in one sentence what inflation is.<|im_end|>\n<|im_start|>assistant\n";

static void test_streaming_order_and_determinism(void) {
    fe_session *s = new_session(512);
    REQUIRE(s != NULL);
    static collect_t c1, c2;
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 24;
    gp.on_token = collect;
    gp.user_data = &c1;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    CHECK(r.stop_reason == FE_STOP_MAX_TOKENS || r.stop_reason == FE_STOP_EOS);
    CHECK(r.n_generated == c1.n);
    CHECK(c1.n > 3);
    CHECK(r.n_prompt > 10);
    /* pieces arrive in order: their concatenation is the detokenized token sequence */
    char buf[16384];
    size_t len = 0;
    CHECK_STATUS(fe_detokenize(g_model, c1.tokens, c1.n, false, buf, sizeof buf, &len), FE_OK, NULL);
    CHECK(len == c1.len && memcmp(buf, c1.text, len) == 0);
    /* greedy is deterministic across calls on the same session */
    gp.user_data = &c2;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    CHECK(c2.n == c1.n && memcmp(c1.tokens, c2.tokens, sizeof(int32_t) * (size_t)c1.n) == 0);
    /* token prompt == text prompt */
    int32_t toks[256];
    int32_t n = 0;
    CHECK_STATUS(fe_tokenize(g_model, PROMPT, true, true, toks, 256, &n), FE_OK, NULL);
    CHECK(n == r.n_prompt);
    memset(&c2, 0, sizeof c2);
    CHECK_STATUS(fe_generate_tokens(s, toks, n, &gp, &r), FE_OK, NULL);
    CHECK(c2.n == c1.n && memcmp(c1.tokens, c2.tokens, sizeof(int32_t) * (size_t)c1.n) == 0);
    fprintf(stderr, "  greedy answer: %s\n", c1.text);
    fe_session_free(s);
}

static void test_stop_from_callback(void) {
    fe_session *s = new_session(512);
    REQUIRE(s != NULL);
    static collect_t c;
    memset(&c, 0, sizeof c);
    c.stop_after = 3;
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 50;
    gp.ignore_eos = true;
    gp.on_token = collect;
    gp.user_data = &c;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    CHECK(r.stop_reason == FE_STOP_CALLBACK);
    CHECK(c.n == 3);
    CHECK(r.n_generated == 3);
    fe_session_free(s);
}

static void test_stop_strings(void) {
    fe_session *s = new_session(512);
    REQUIRE(s != NULL);
    static collect_t full, cut;
    memset(&full, 0, sizeof full);
    memset(&cut, 0, sizeof cut);
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 32;
    gp.ignore_eos = true;
    gp.on_token = collect;
    gp.user_data = &full;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    REQUIRE(full.len > 20);
    /* stop at a 4-byte string from the middle of the greedy answer */
    char stop[5];
    memcpy(stop, full.text + full.len / 2, 4);
    stop[4] = 0;
    const char *first = strstr(full.text, stop);
    REQUIRE(first != NULL);
    size_t expect = (size_t)(first - full.text);
    const char *stops[2] = {"@@never@@", stop};
    gp.stop = stops;
    gp.n_stop = 2;
    gp.user_data = &cut;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    CHECK(r.stop_reason == FE_STOP_STRING);
    CHECK(cut.len == expect);
    CHECK(memcmp(cut.text, full.text, expect) == 0);
    CHECK(strstr(cut.text, stop) == NULL);
    /* a stop string that never appears changes nothing */
    static collect_t same;
    memset(&same, 0, sizeof same);
    gp.n_stop = 1;
    gp.user_data = &same;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    CHECK(r.stop_reason == FE_STOP_MAX_TOKENS);
    CHECK(same.len == full.len && strcmp(same.text, full.text) == 0);
    fe_session_free(s);
}

static void test_prompt_longer_than_context(void) {
    fe_session *s = new_session(32);
    REQUIRE(s != NULL);
    char prompt[4096] = "";
    for (int i = 0; i < 20; i++) strcat(prompt, "Interest rates and bond prices move in opposite directions. ");
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 4;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, prompt, &gp, &r), FE_ERR_CONTEXT_OVERFLOW, "n_ctx = 32");
    CHECK(r.n_prompt > 32);
    CHECK(r.n_generated == 0);
    /* the session is still usable with a prompt that fits */
    CHECK_STATUS(fe_generate(s, "Bonds are", &gp, &r), FE_OK, NULL);
    CHECK(r.n_generated > 0);
    /* generation that runs into the end of the context stops cleanly */
    gp.max_tokens = 500;
    gp.ignore_eos = true;
    CHECK_STATUS(fe_generate(s, "Bonds are", &gp, &r), FE_OK, NULL);
    CHECK(r.stop_reason == FE_STOP_CONTEXT_FULL);
    CHECK(r.n_prompt + r.n_generated <= 33);
    CHECK(r.n_generated > 20);
    fe_session_free(s);
}

static void test_profile(void) {
    fe_session *s = new_session(512);
    REQUIRE(s != NULL);
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 16;
    gp.ignore_eos = true;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    fe_profile p;
    REQUIRE(fe_session_get_profile(s, &p) == FE_OK);
    CHECK(p.n_gen == 16 && r.n_generated == 16);
    CHECK(p.n_prompt == r.n_prompt);
    CHECK(p.n_token_ms == 15 && p.token_ms != NULL);
    CHECK(p.load_ms > 0 && p.ttft_ms > 0 && p.prefill_ms > 0 && p.tokenize_ms >= 0);
    CHECK(p.ttft_ms >= p.prefill_ms);
    CHECK(p.prefill_tok_s > 0 && p.decode_tok_s > 0);
    CHECK(p.token_ms_p50 > 0 && p.token_ms_p50 <= p.token_ms_p90 && p.token_ms_p90 <= p.token_ms_p99);
    CHECK(p.e2e_ms >= p.ttft_ms);
    CHECK(p.peak_rss_mb > 50);
    double sum = 0;
    for (size_t i = 0; i < p.n_token_ms; i++) sum += p.token_ms[i];
    CHECK(p.decode_tok_s > 0.999 * 1000.0 * 15 / sum && p.decode_tok_s < 1.001 * 1000.0 * 15 / sum);
    CHECK(p.token_ms_p50 == fe_percentile(p.token_ms, p.n_token_ms, 50));
    CHECK(p.e2e_ms + 1e-6 >= p.ttft_ms + sum * 0.99);
    /* reset clears it */
    CHECK_STATUS(fe_session_reset(s), FE_OK, NULL);
    REQUIRE(fe_session_get_profile(s, &p) == FE_OK);
    CHECK(p.n_token_ms == 0 && p.token_ms == NULL && p.n_gen == 0);
    fe_session_free(s);
}

/* Generates n tokens of PROMPT (EOS ignored) with the given sampling into c. */
static void run_with(fe_sampling_params sampling, int n, collect_t *c) {
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = 512;
    sp.n_threads = 1;
    fe_session *s = NULL;
    CHECK_STATUS(fe_session_create(g_model, &sp, &s), FE_OK, NULL);
    if (!s) return;
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = n;
    gp.ignore_eos = true;
    gp.sampling = sampling;
    gp.on_token = collect;
    gp.user_data = c;
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, PROMPT, &gp, &r), FE_OK, NULL);
    CHECK(r.n_generated == n);
    fe_session_free(s);
}

static void run_sampled(uint32_t seed, collect_t *c) {
    fe_sampling_params sp = fe_sampling_default_params();
    sp.seed = seed;
    sp.temperature = 0.9f;
    sp.top_k = 40;
    sp.top_p = 0.9f;
    sp.repeat_penalty = 1.15f;
    sp.repeat_last_n = 32;
    run_with(sp, 20, c);
}

static void test_sampling_seeded(void) {
    static collect_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    run_sampled(1234, &a);
    run_sampled(1234, &b);
    CHECK(a.n == 20 && b.n == 20);
    CHECK(memcmp(a.tokens, b.tokens, sizeof(int32_t) * 20) == 0);
}

/* Plain greedy takes a vectorised argmax of the logits row; top-k 1 goes through llama.cpp's
 * sampler chain (top-k -> temp -> dist over one candidate). Both must pick the same tokens. */
static void run_greedy(float temperature, int32_t top_k, collect_t *c) {
    fe_sampling_params sp = fe_sampling_default_params();
    sp.temperature = temperature;
    sp.top_k = top_k;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    run_with(sp, 24, c);
}

static void test_argmax_path_equals_sampler_chain(void) {
    static collect_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    run_greedy(0.0f, 40, &a);  /* argmax fast path */
    run_greedy(0.7f, 1, &b);   /* llama.cpp sampler chain, one candidate left */
    CHECK(a.n == 24 && b.n == 24);
    CHECK(memcmp(a.tokens, b.tokens, sizeof(int32_t) * 24) == 0);
}

int main(int argc, char **argv) {
    const char *path = fe_test_model(argc, argv);
    g_model = fe_test_load(path);
    RUN(test_model_info());
    RUN(test_tokenize_roundtrip());
    RUN(test_chat_template());
    RUN(test_streaming_order_and_determinism());
    RUN(test_stop_from_callback());
    RUN(test_stop_strings());
    RUN(test_prompt_longer_than_context());
    RUN(test_profile());
    RUN(test_sampling_seeded());
    RUN(test_argmax_path_equals_sampler_chain());
    fe_model_free(g_model);
    return fe_test_finish();
}
