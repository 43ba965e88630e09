/* Compiles finllm_edge.h as plain C11 (-std=c11 -pedantic -Werror) and checks the calls
 * that need no model: defaults, status names, versions, percentiles, NULL handling. */
#include "finllm_edge.h"
#include "fe_test.h"

#include <math.h>

static void test_defaults(void) {
    fe_model_params mp = fe_model_default_params();
    CHECK(mp.use_mmap == true);
    CHECK(mp.use_mlock == false);
    fe_session_params sp = fe_session_default_params();
    CHECK(sp.n_ctx == 2048);
    CHECK(sp.n_batch == 512);
    CHECK(sp.n_threads >= 1 && sp.n_threads <= fe_cpu_count());
    CHECK(sp.n_threads == fe_default_n_threads());
    fe_generate_params gp = fe_generate_default_params();
    CHECK(gp.sampling.temperature <= 0.0f); /* greedy by default */
    CHECK(gp.sampling.repeat_penalty == 1.0f);
    CHECK(gp.sampling.min_p > 0.049f && gp.sampling.min_p < 0.051f);
    CHECK(gp.sampling.seed == FE_SEED_RANDOM);
    CHECK(fe_sampling_check(&gp.sampling) == FE_OK);
    CHECK(gp.max_tokens == 256);
    CHECK(gp.stop == NULL && gp.n_stop == 0);
    CHECK(gp.on_token == NULL);
    CHECK(gp.add_special && gp.parse_special && !gp.ignore_eos);
}

static void test_sampling_ranges(void) {
    fe_sampling_params bad[7];
    for (int i = 0; i < 7; i++) bad[i] = fe_sampling_default_params();
    bad[0].temperature = -0.1f;
    bad[1].temperature = NAN;
    bad[2].top_p = 1.5f;
    bad[3].top_k = -1;
    bad[4].min_p = 1.0f;
    bad[5].repeat_penalty = 0.0f;
    bad[6].repeat_last_n = -2;
    const char *field[7] = {"temperature", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n"};
    for (int i = 0; i < 7; i++) {
        CHECK(fe_sampling_check(&bad[i]) == FE_ERR_INVALID_ARG);
        CHECK(strstr(fe_last_error(), field[i]) != NULL);
        CHECK(strstr(fe_last_error(), "range") != NULL);
    }
    CHECK(strcmp(fe_finish_reason(FE_STOP_EOS), "stop") == 0);
    CHECK(strcmp(fe_finish_reason(FE_STOP_STRING), "stop") == 0);
    CHECK(strcmp(fe_finish_reason(FE_STOP_MAX_TOKENS), "length") == 0);
    CHECK(strcmp(fe_finish_reason(FE_STOP_CONTEXT_FULL), "length") == 0);
    CHECK(strcmp(fe_finish_reason(FE_STOP_CANCELLED), "cancelled") == 0);
}

static void test_status_and_versions(void) {
    CHECK(strcmp(fe_status_str(FE_OK), "FE_OK") == 0);
    CHECK(strcmp(fe_status_str(FE_ERR_CONTEXT_OVERFLOW), "FE_ERR_CONTEXT_OVERFLOW") == 0);
    CHECK(strcmp(fe_status_str((fe_status)-999), "FE_ERR_UNKNOWN") == 0);
    CHECK(FE_ERR_INVALID_ARG < 0 && FE_ERR_INTERNAL < 0);
    CHECK(strlen(fe_version()) > 0);
    CHECK(strstr(fe_llama_version(), "0.3.36") != NULL);
    CHECK(fe_build_variant() != NULL);
    fe_clear_error();
    CHECK(strcmp(fe_last_error(), "") == 0);
}

static void test_percentile(void) {
    double v[] = {5, 1, 4, 2, 3};
    CHECK(fabs(fe_percentile(v, 5, 50) - 3.0) < 1e-12);
    CHECK(fabs(fe_percentile(v, 5, 0) - 1.0) < 1e-12);
    CHECK(fabs(fe_percentile(v, 5, 100) - 5.0) < 1e-12);
    CHECK(fabs(fe_percentile(v, 5, 90) - 4.6) < 1e-12);   /* numpy: 4.6 */
    double w[] = {10, 20};
    CHECK(fabs(fe_percentile(w, 2, 99) - 19.9) < 1e-12);  /* numpy: 19.9 */
    CHECK(fe_percentile(NULL, 3, 50) == 0.0);
    CHECK(fe_percentile(v, 0, 50) == 0.0);
    CHECK(fabs(fe_percentile(v, 5, 250) - 5.0) < 1e-12); /* clamped */
    CHECK(v[0] == 5 && v[1] == 1);                        /* input not reordered */
    CHECK(fe_peak_rss_mb() > 0.0);
}

static void test_null_everything(void) {
    fe_model_free(NULL);
    fe_session_free(NULL);
    fe_session_cancel(NULL);
    CHECK_STATUS(fe_model_load(NULL, NULL, NULL), FE_ERR_INVALID_ARG, "out is NULL");
    fe_model *m = (fe_model *)(void *)&m; /* poisoned: must be reset to NULL */
    CHECK_STATUS(fe_model_load(NULL, NULL, &m), FE_ERR_INVALID_ARG, "NULL");
    CHECK(m == NULL);
    CHECK_STATUS(fe_model_load("", NULL, &m), FE_ERR_INVALID_ARG, "empty");
    CHECK_STATUS(fe_model_get_info(NULL, NULL), FE_ERR_INVALID_ARG, "NULL");
    CHECK_STATUS(fe_gguf_preflight(NULL), FE_ERR_INVALID_ARG, "NULL");
    int32_t toks[4];
    int32_t n = 7;
    CHECK_STATUS(fe_tokenize(NULL, "x", true, false, toks, 4, &n), FE_ERR_INVALID_ARG, "NULL");
    CHECK(n == 0);
    char buf[8];
    size_t len = 9;
    CHECK_STATUS(fe_detokenize(NULL, toks, 0, false, buf, sizeof buf, &len), FE_ERR_INVALID_ARG, "NULL");
    CHECK_STATUS(fe_chat_format(NULL, NULL, 0, true, buf, sizeof buf, &len), FE_ERR_INVALID_ARG, "NULL");
    CHECK(fe_token_eos(NULL) == -1 && fe_token_bos(NULL) == -1 && !fe_token_is_eog(NULL, 0));
    fe_session *s = (fe_session *)(void *)&s;
    CHECK_STATUS(fe_session_create(NULL, NULL, &s), FE_ERR_INVALID_ARG, "model is NULL");
    CHECK(s == NULL);
    CHECK_STATUS(fe_session_create(NULL, NULL, NULL), FE_ERR_INVALID_ARG, "out is NULL");
    CHECK_STATUS(fe_session_reset(NULL), FE_ERR_INVALID_ARG, "NULL");
    int32_t n_settled = 7;
    CHECK_STATUS(fe_session_settle(NULL, &n_settled), FE_ERR_INVALID_ARG, "NULL");
    CHECK(n_settled == 0);
    CHECK(fe_settle_idle_ms() > 0 && fe_settle_idle_ms() <= 1000);
    fe_generate_result r;
    CHECK_STATUS(fe_generate(NULL, "hi", NULL, &r), FE_ERR_INVALID_ARG, "session is NULL");
    CHECK(r.stop_reason == FE_STOP_NONE);
    CHECK_STATUS(fe_generate_tokens(NULL, toks, 1, NULL, NULL), FE_ERR_INVALID_ARG, "NULL");
    fe_profile prof;
    CHECK_STATUS(fe_session_get_profile(NULL, &prof), FE_ERR_INVALID_ARG, "NULL");
}

/* Parameter ranges are checked without a model (a binding refuses them before loading one). */
static void test_params_check(void) {
    fe_session_params sp = fe_session_default_params();
    CHECK(fe_session_params_check(&sp) == FE_OK);
    sp.n_ctx = 0;
    CHECK_STATUS(fe_session_params_check(&sp), FE_ERR_INVALID_ARG, "n_ctx is 0");
    sp = fe_session_default_params();
    sp.n_ctx = 1u << 30;
    CHECK_STATUS(fe_session_params_check(&sp), FE_ERR_INVALID_ARG, "n_ctx = 1073741824 is out of range");
    sp = fe_session_default_params();
    sp.n_batch = 0;
    CHECK_STATUS(fe_session_params_check(&sp), FE_ERR_INVALID_ARG, "n_batch");
    sp = fe_session_default_params();
    sp.n_threads_batch = fe_cpu_count() + 1;
    CHECK_STATUS(fe_session_params_check(&sp), FE_ERR_INVALID_ARG, "n_threads_batch");
    CHECK_STATUS(fe_session_params_check(NULL), FE_ERR_INVALID_ARG, "NULL");

    fe_scheduler_params qp = fe_scheduler_default_params();
    CHECK(fe_scheduler_params_check(&qp) == FE_OK);
    qp.n_slots = 65;
    CHECK_STATUS(fe_scheduler_params_check(&qp), FE_ERR_INVALID_ARG, "n_slots = 65 is out of range");
    qp = fe_scheduler_default_params();
    qp.n_batch_busy = qp.n_batch + 1;
    CHECK_STATUS(fe_scheduler_params_check(&qp), FE_ERR_INVALID_ARG, "n_batch_busy");
    qp = fe_scheduler_default_params();
    qp.p99_token_ms = -1.0;
    CHECK_STATUS(fe_scheduler_params_check(&qp), FE_ERR_INVALID_ARG, "p99_token_ms");
    qp = fe_scheduler_default_params();
    qp.max_queued = 0;
    CHECK_STATUS(fe_scheduler_params_check(&qp), FE_ERR_INVALID_ARG, "max_queued");
    CHECK_STATUS(fe_scheduler_params_check(NULL), FE_ERR_INVALID_ARG, "NULL");
}

static void test_log_settings(void) {
    fe_set_log_level(FE_LOG_ERROR);
    fe_set_log_level((fe_log_level)99); /* clamped, no crash */
    fe_set_log_callback(NULL, NULL);
    fe_set_log_level(FE_LOG_NONE);
}

int main(void) {
    RUN(test_defaults());
    RUN(test_status_and_versions());
    RUN(test_params_check());
    RUN(test_sampling_ranges());
    RUN(test_percentile());
    RUN(test_null_everything());
    RUN(test_log_settings());
    return fe_test_finish();
}
