/* Constrained decoding through the C API: fe_json_schema_to_grammar on valid and hostile
 * schemas (each hostile class an FE_ERR_INVALID_ARG naming it, no crash, no leak under ASan),
 * fe_grammar_check on hostile GBNF, and a JSON-schema generation that ends when complete. */
#include "finllm_edge.h"
#include "fe_test.h"

static char big[FE_GRAMMAR_MAX_BYTES + 64];

static void test_schema_conversion(void) {
    char buf[8192];
    size_t n = 0;
    const char *ok = "{\"type\":\"object\",\"properties\":{\"revenue\":{\"type\":\"number\"}},\"required\":[\"revenue\"]}";
    CHECK_STATUS(fe_json_schema_to_grammar(ok, buf, sizeof buf, &n), FE_OK, NULL);
    CHECK(n == strlen(buf) && strstr(buf, "root ::=") != NULL);
    CHECK_STATUS(fe_json_schema_to_grammar(ok, buf, 8, &n), FE_ERR_BUFFER_TOO_SMALL, NULL);
    CHECK(n > 8);
    CHECK_STATUS(fe_json_schema_to_grammar(NULL, buf, sizeof buf, &n), FE_ERR_INVALID_ARG, "NULL");
    CHECK_STATUS(fe_json_schema_to_grammar("{\"type\":", buf, sizeof buf, &n), FE_ERR_INVALID_ARG, "not valid JSON");
    CHECK_STATUS(fe_json_schema_to_grammar("{\"type\":\"array\",\"minItems\":1e9}", buf, sizeof buf, &n),
                 FE_ERR_INVALID_ARG, "minItems");
    CHECK_STATUS(fe_json_schema_to_grammar("{\"type\":\"integer\",\"minimum\":-1e300}", buf, sizeof buf, &n),
                 FE_ERR_INVALID_ARG, "minimum");
    CHECK_STATUS(fe_json_schema_to_grammar("{\"$ref\":\"#/$defs/a\",\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}}}", buf,
                                           sizeof buf, &n),
                 FE_ERR_INVALID_ARG, "cycle");
    /* deep nesting */
    size_t k = 0;
    for (int i = 0; i < 10000; i++) k += (size_t)sprintf(big + k, "[");
    for (int i = 0; i < 10000; i++) k += (size_t)sprintf(big + k, "]");
    CHECK_STATUS(fe_json_schema_to_grammar(big, buf, sizeof buf, &n), FE_ERR_INVALID_ARG, "nests deeper");
    /* too long */
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    CHECK_STATUS(fe_json_schema_to_grammar(big, buf, sizeof buf, &n), FE_ERR_INVALID_ARG, "longer than");
}

static void test_grammar_check(fe_model *m) {
    CHECK_STATUS(fe_grammar_check(m, "root ::= \"yes\" | \"no\"", NULL), FE_OK, NULL);
    CHECK_STATUS(fe_grammar_check(m, "root ::= (", NULL), FE_ERR_INVALID_ARG, "grammar");
    CHECK_STATUS(fe_grammar_check(m, "root ::= root \"a\" | \"a\"", NULL), FE_ERR_INVALID_ARG, "left recursion");
    CHECK_STATUS(fe_grammar_check(m, "root ::= \"a\"{100000}", NULL), FE_ERR_INVALID_ARG, "grammar");
    CHECK_STATUS(fe_grammar_check(m, "root ::= \"a\"", "{}"), FE_ERR_INVALID_ARG, "at most one");
    CHECK_STATUS(fe_grammar_check(NULL, "root ::= \"a\"", NULL), FE_ERR_INVALID_ARG, "NULL");
    size_t k = (size_t)sprintf(big, "root ::= ");
    for (int i = 0; i < 1000; i++) k += (size_t)sprintf(big + k, "(");
    k += (size_t)sprintf(big + k, "\"a\"");
    for (int i = 0; i < 1000; i++) k += (size_t)sprintf(big + k, ")");
    CHECK_STATUS(fe_grammar_check(m, big, NULL), FE_ERR_INVALID_ARG, "nests groups deeper");
}

static void test_generation(fe_model *m) {
    fe_session *s = NULL;
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = 512;
    sp.n_threads = sp.n_threads_batch = 2;
    REQUIRE(fe_session_create(m, &sp, &s) == FE_OK);
    fe_chat_message msgs[] = {{"user", "Revenue was 120 million dollars. Answer as JSON."}};
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 96;
    gp.sampling.json_schema = "{\"type\":\"object\",\"properties\":{\"currency\":{\"enum\":[\"USD\",\"EUR\"]}},"
                              "\"required\":[\"currency\"]}";
    CHECK_STATUS(fe_request_start_chat(s, msgs, 1, &gp), FE_OK, NULL);
    char text[1024];
    size_t len = 0;
    fe_token_event ev;
    fe_status st;
    while ((st = fe_request_next(s, &ev)) == FE_OK) {
        if (len + ev.text_len < sizeof text) {
            memcpy(text + len, ev.text, ev.text_len);
            len += ev.text_len;
        }
        if (ev.done) break;
    }
    text[len] = '\0';
    CHECK(st == FE_OK && ev.done && ev.stop_reason == FE_STOP_EOS);
    CHECK(strstr(text, "\"currency\"") != NULL && (strstr(text, "\"USD\"") || strstr(text, "\"EUR\"")));
    CHECK(text[0] == '{' || text[0] == ' ' || text[0] == '\n');
    /* both set: refused before any work */
    gp.sampling.grammar = "root ::= \"a\"";
    CHECK_STATUS(fe_request_start_chat(s, msgs, 1, &gp), FE_ERR_INVALID_ARG, "at most one");
    CHECK(!fe_request_active(s));
    fe_session_free(s);
}

int main(int argc, char **argv) {
    const char *path = fe_test_model(argc, argv);
    RUN(test_schema_conversion());
    fe_model *m = fe_test_load(path);
    RUN(test_grammar_check(m));
    RUN(test_generation(m));
    fe_model_free(m);
    return fe_test_finish();
}
