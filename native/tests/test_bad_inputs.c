/* Bad input through the C API: missing files, non-GGUF files, broken headers, zero
 * context, out-of-range arguments. Every call must return an error status with a useful
 * message; the process must never abort. argv[1] = SmolLM2 GGUF, argv[2] = scratch dir. */
#include "finllm_edge.h"
#include "fe_test.h"

#include <stdint.h>
#include <sys/stat.h>

static char g_dir[1024];
static const char *g_model;

static const char *fixture(const char *name, const void *data, size_t n) {
    static char path[2048];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot create fixture %s\n", path);
        exit(1);
    }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

/* A GGUF header: magic, version, n_tensors, n_kv (little endian), nothing after it. */
static const char *gguf_header(const char *name, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    unsigned char h[24] = {'G', 'G', 'U', 'F'};
    for (int i = 0; i < 4; i++) h[4 + i] = (unsigned char)(version >> (8 * i));
    for (int i = 0; i < 8; i++) h[8 + i] = (unsigned char)(n_tensors >> (8 * i));
    for (int i = 0; i < 8; i++) h[16 + i] = (unsigned char)(n_kv >> (8 * i));
    return fixture(name, h, sizeof h);
}

static void expect_load_error(const char *path, fe_status want, const char *needle) {
    fe_model *m = (fe_model *)(void *)&m;
    CHECK_STATUS(fe_model_load(path, NULL, &m), want, needle);
    CHECK(m == NULL);
    CHECK_STATUS(fe_gguf_preflight(path), want, needle);
    fe_model_free(m);
}

static void test_missing_file(void) {
    char path[2048];
    snprintf(path, sizeof path, "%s/does-not-exist.gguf", g_dir);
    expect_load_error(path, FE_ERR_FILE_NOT_FOUND, "No such file");
    expect_load_error("/nonexistent-dir/x/model.gguf", FE_ERR_FILE_NOT_FOUND, "cannot open");
}

static void test_text_file_renamed_gguf(void) {
    const char *text = "This is not a model, just a text file someone renamed.\n";
    expect_load_error(fixture("notes.gguf", text, strlen(text)), FE_ERR_BAD_MODEL, "not a GGUF file");
}

static void test_broken_headers(void) {
    expect_load_error(fixture("empty.gguf", "", 0), FE_ERR_BAD_MODEL, "24-byte GGUF header");
    expect_load_error(fixture("short.gguf", "GGUF\3\0\0\0", 8), FE_ERR_BAD_MODEL, "24-byte GGUF header");
    expect_load_error(gguf_header("version99.gguf", 99, 0, 0), FE_ERR_BAD_MODEL, "unsupported GGUF version 99");
    expect_load_error(gguf_header("version1.gguf", 1, 0, 0), FE_ERR_BAD_MODEL, "unsupported GGUF version 1");
    expect_load_error(gguf_header("huge-tensors.gguf", 3, UINT64_MAX, 1), FE_ERR_BAD_MODEL, "tensor count");
    expect_load_error(gguf_header("huge-kv.gguf", 3, 0, (uint64_t)1 << 40), FE_ERR_BAD_MODEL, "key count");
    expect_load_error(gguf_header("truncated.gguf", 3, 1000, 20), FE_ERR_BAD_MODEL, "truncated");
    /* a well-formed header that declares nothing: the structural validator names the field */
    expect_load_error(gguf_header("no-tensors.gguf", 3, 0, 0), FE_ERR_BAD_MODEL, "tensor_count");
}

/* A copy of the real model whose last 64 bytes (inside the last tensor's data) are 0xFF:
 * the header is intact, so only llama.cpp's tensor check (check_tensors) can see the NaNs.
 * Its error text must reach fe_last_error() and the log sink. */
static const char *nan_model_copy(void) {
    static char path[2048];
    snprintf(path, sizeof path, "%s/nan-weights.gguf", g_dir);
    FILE *in = fopen(g_model, "rb");
    FILE *out = fopen(path, "wb");
    if (!in || !out) {
        fprintf(stderr, "cannot copy %s to %s\n", g_model, path);
        exit(1);
    }
    static char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    memset(buf, 0xFF, 64);
    fseek(out, -64, SEEK_END);
    fwrite(buf, 1, 64, out);
    fclose(out);
    return path;
}

static void test_llama_error_reaches_last_error(void) {
    const char *path = nan_model_copy();
    CHECK_STATUS(fe_gguf_preflight(path), FE_OK, NULL);
    fe_model_params mp = fe_model_default_params();
    fe_model *m = (fe_model *)(void *)&m;
    mp.check_tensors = true;
    CHECK_STATUS(fe_model_load(path, &mp, &m), FE_ERR_BAD_MODEL, "llama.cpp could not load");
    CHECK(m == NULL);
    CHECK(strstr(fe_last_error(), "no details") == NULL); /* llama.cpp's own reason is quoted */
    CHECK(strstr(fe_last_error(), "invalid") != NULL || strstr(fe_last_error(), "nan") != NULL ||
          strstr(fe_last_error(), "NaN") != NULL);
}

static void test_directory_as_model(void) {
    expect_load_error(g_dir, FE_ERR_BAD_MODEL, "not a regular file");
}

static int g_log_lines;
static char g_log_text[512];
static void capture_log(fe_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= FE_LOG_ERROR) {
        g_log_lines++;
        strncat(g_log_text, text, sizeof g_log_text - strlen(g_log_text) - 1);
    }
}

static void test_log_callback_sees_llama_errors(void) {
    const char *path = nan_model_copy();
    fe_model_params mp = fe_model_default_params();
    mp.check_tensors = true;
    g_log_lines = 0;
    g_log_text[0] = 0;
    fe_set_log_callback(capture_log, NULL);
    fe_set_log_level(FE_LOG_ERROR);
    fe_model *m = NULL;
    CHECK_STATUS(fe_model_load(path, &mp, &m), FE_ERR_BAD_MODEL, "llama.cpp");
    CHECK(g_log_lines > 0);
    CHECK(strlen(g_log_text) > 0);
    /* silenced: nothing reaches the sink, the error still reaches fe_last_error() */
    fe_set_log_level(FE_LOG_NONE);
    g_log_lines = 0;
    CHECK_STATUS(fe_model_load(path, &mp, &m), FE_ERR_BAD_MODEL, "llama.cpp");
    CHECK(g_log_lines == 0);
    fe_set_log_callback(NULL, NULL);
    /* our own errors go to the sink too */
    fe_set_log_callback(capture_log, NULL);
    fe_set_log_level(FE_LOG_ERROR);
    g_log_lines = 0;
    CHECK_STATUS(fe_model_load("/nonexistent/x.gguf", NULL, &m), FE_ERR_FILE_NOT_FOUND, "cannot open");
    CHECK(g_log_lines == 1);
    fe_set_log_level(FE_LOG_NONE);
    fe_set_log_callback(NULL, NULL);
}

static void test_bad_args_with_model(void) {
    fe_model *m = NULL;
    REQUIRE(fe_model_load(g_model, NULL, &m) == FE_OK && m != NULL);

    fe_session *s = (fe_session *)(void *)&s;
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = 0;
    CHECK_STATUS(fe_session_create(m, &sp, &s), FE_ERR_INVALID_ARG, "n_ctx is 0");
    CHECK(s == NULL);
    sp = fe_session_default_params();
    sp.n_batch = 0;
    CHECK_STATUS(fe_session_create(m, &sp, &s), FE_ERR_INVALID_ARG, "n_batch");
    sp = fe_session_default_params();
    sp.n_threads = 0;
    CHECK_STATUS(fe_session_create(m, &sp, &s), FE_ERR_INVALID_ARG, "n_threads = 0 is out of range");
    sp.n_threads = 10000;
    CHECK_STATUS(fe_session_create(m, &sp, &s), FE_ERR_INVALID_ARG, "the CPUs online");
    sp = fe_session_default_params();
    sp.n_ctx = 1u << 30;
    CHECK_STATUS(fe_session_create(m, &sp, &s), FE_ERR_INVALID_ARG, "n_ctx");
    sp = fe_session_default_params();
    sp.n_ctx = 256;
    CHECK_STATUS(fe_session_create(m, &sp, NULL), FE_ERR_INVALID_ARG, "out is NULL");
    s = NULL;
    REQUIRE(fe_session_create(m, &sp, &s) == FE_OK && s != NULL);

    int32_t toks[4];
    int32_t n = 0;
    CHECK_STATUS(fe_tokenize(m, NULL, true, false, toks, 4, &n), FE_ERR_INVALID_ARG, "NULL");
    CHECK_STATUS(fe_tokenize(m, "x", true, false, NULL, 4, &n), FE_ERR_INVALID_ARG, "tokens is NULL");
    CHECK_STATUS(fe_tokenize(m, "x", true, false, toks, -1, &n), FE_ERR_INVALID_ARG, "max_tokens");
    char buf[16];
    size_t len = 0;
    int32_t bad[2] = {-5, 1 << 30};
    CHECK_STATUS(fe_detokenize(m, bad, 1, false, buf, sizeof buf, &len), FE_ERR_INVALID_ARG, "outside the vocabulary");
    CHECK_STATUS(fe_detokenize(m, bad + 1, 1, false, buf, sizeof buf, &len), FE_ERR_INVALID_ARG, "outside the vocabulary");
    CHECK_STATUS(fe_detokenize(m, toks, -1, false, buf, sizeof buf, &len), FE_ERR_INVALID_ARG, "negative");
    CHECK(!fe_token_is_eog(m, -1) && !fe_token_is_eog(m, 1 << 30));

    fe_chat_message msg = {NULL, "hello"};
    CHECK_STATUS(fe_chat_format(m, &msg, 1, true, buf, sizeof buf, &len), FE_ERR_INVALID_ARG, "NULL role");

    fe_generate_params gp = fe_generate_default_params();
    fe_generate_result r;
    CHECK_STATUS(fe_generate(s, NULL, &gp, &r), FE_ERR_INVALID_ARG, "prompt is NULL");
    gp.max_tokens = -1;
    CHECK_STATUS(fe_generate(s, "hi", &gp, &r), FE_ERR_INVALID_ARG, "max_tokens");
    gp = fe_generate_default_params();
    gp.sampling.top_p = 1.5f;
    CHECK_STATUS(fe_generate(s, "hi", &gp, &r), FE_ERR_INVALID_ARG, "top_p");
    gp = fe_generate_default_params();
    gp.n_stop = 2;
    CHECK_STATUS(fe_generate(s, "hi", &gp, &r), FE_ERR_INVALID_ARG, "stop is NULL");
    gp = fe_generate_default_params();
    gp.add_special = false;
    CHECK_STATUS(fe_generate(s, "", &gp, &r), FE_ERR_INVALID_ARG, "no tokens");
    CHECK_STATUS(fe_generate_tokens(s, bad, 2, NULL, &r), FE_ERR_INVALID_ARG, "outside the vocabulary");
    CHECK_STATUS(fe_generate_tokens(s, toks, 0, NULL, &r), FE_ERR_INVALID_ARG, "n_tokens");

    /* after all that, the session still works */
    gp = fe_generate_default_params();
    gp.max_tokens = 2;
    CHECK_STATUS(fe_generate(s, "The stock market", &gp, &r), FE_OK, NULL);
    CHECK(r.n_generated >= 1);

    fe_session_free(s);
    fe_session_free(NULL);
    fe_model_free(m);
    fe_model_free(NULL);
}

int main(int argc, char **argv) {
    g_model = fe_test_model(argc, argv);
    snprintf(g_dir, sizeof g_dir, "%s", argc > 2 ? argv[2] : "fe-test-fixtures");
    mkdir(g_dir, 0755);
    RUN(test_missing_file());
    RUN(test_text_file_renamed_gguf());
    RUN(test_broken_headers());
    RUN(test_directory_as_model());
    RUN(test_llama_error_reaches_last_error());
    RUN(test_log_callback_sees_llama_errors());
    RUN(test_bad_args_with_model());
    return fe_test_finish();
}
