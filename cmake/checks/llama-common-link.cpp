// Link check for fe::llama_common (llama.cpp's common library in the stage-1 prefix):
// renders a chat template with the C++ Jinja engine and turns a JSON schema into a GBNF
// grammar, through the headers and static archives that libfinllm_edge links. Built and
// run by tests/test_host_variants.py; exits 0 and prints the two results on success.
#include "jinja/lexer.h"
#include "jinja/parser.h"
#include "jinja/runtime.h"
#include "json-schema-to-grammar.h"
#include "json.h"
#include "chat.h"
#include "common.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

int main() {
    const std::string tmpl =
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    jinja::lexer lexer;
    jinja::lexer_result toks = lexer.tokenize(tmpl);
    jinja::program prog = jinja::parse_from_tokens(toks);
    jinja::context ctx(tmpl);
    common_json vars = common_json::parse(
        R"({"messages": [{"role": "user", "content": "What is EBITDA?"}], "add_generation_prompt": true})");
    jinja::global_from_json(ctx, vars, false);
    jinja::runtime rt(ctx);
    std::string out = jinja::runtime::gather_string_parts(rt.execute(prog))->as_string().str();
    const std::string want = "<|im_start|>user\nWhat is EBITDA?<|im_end|>\n<|im_start|>assistant\n";
    if (out != want) {
        std::fprintf(stderr, "jinja render mismatch:\n%s\n", out.c_str());
        return 1;
    }

    common_json schema = common_json::parse(
        R"({"type": "object", "properties": {"ticker": {"type": "string"}, "price": {"type": "number"}},
            "required": ["ticker", "price"]})");
    std::string grammar = json_schema_to_grammar(schema);
    if (grammar.find("root ::=") == std::string::npos || grammar.find("ticker") == std::string::npos) {
        std::fprintf(stderr, "unexpected grammar:\n%s\n", grammar.c_str());
        return 1;
    }

    nlohmann::json j = nlohmann::json::parse(R"({"ok": true})");
    if (!j["ok"].get<bool>()) return 1;

    std::printf("%s---\n%s", out.c_str(), grammar.c_str());
    return 0;
}
