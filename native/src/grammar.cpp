// Constrained decoding: GBNF grammars and JSON Schema (converted to GBNF here, by llama.cpp's
// common/json-schema-to-grammar), checked against bounds before anything else sees them, and
// the grammar step of the token loop (greedy: check the argmax first, mask only when refused).
#include "grammar.h"

#include "json-schema-to-grammar.h"
#include "json.h"

#include <pthread.h>
#include <time.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <set>
#include <stdexcept>

namespace {

constexpr int kMaxJsonDepth = 32;
constexpr int kMaxGroupDepth = 64;
constexpr size_t kMaxProperties = 256;
constexpr size_t kMaxEnumValues = 1024;
constexpr size_t kMaxLiteralBytes = 64 * 1024;
constexpr int64_t kMaxCount = 2000;          // minItems/maxItems/minLength/maxLength (llama.cpp's repetition cap)
constexpr double kMaxBound = 9007199254740992.0;  // 2^53
constexpr size_t kMaxPatternBytes = 1024;
constexpr long kMaxNodes = 10000;
constexpr size_t kMaxRefs = 128;
constexpr size_t kMaxGrammarOut = 1u << 20;
constexpr size_t kWorkerStack = 64u << 20;

struct Refused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void refuse(const std::string &what) { throw Refused(what); }

void check_size(const char *what, const char *text) {
    size_t n = strnlen(text, FE_GRAMMAR_MAX_BYTES + 1);
    if (n > FE_GRAMMAR_MAX_BYTES)
        refuse(std::string(what) + " is longer than " + std::to_string(FE_GRAMMAR_MAX_BYTES) + " bytes");
}

// JSON nesting of the raw text, before a parser (which recurses) sees it.
void check_json_depth(const std::string &text) {
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < text.size(); i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > kMaxJsonDepth)
                refuse("json_schema nests deeper than " + std::to_string(kMaxJsonDepth) + " levels (at byte " +
                       std::to_string(i) + ")");
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
}

// The schema walk: every keyword json-schema-to-grammar reads, checked against the bounds.
struct SchemaCheck {
    const common_json &root;
    long nodes = 0;
    size_t literal_bytes = 0;
    std::set<std::string> refs;

    explicit SchemaCheck(const common_json &r) : root(r) {}

    const common_json *resolve(const std::string &ref, const std::string &path) {
        if (ref.compare(0, 2, "#/") != 0)
            refuse("json_schema: $ref \"" + ref + "\" at " + path + " is not a local reference (\"#/...\")");
        const common_json *t = &root;
        size_t start = 2;
        while (true) {
            size_t end = ref.find('/', start);
            std::string sel = ref.substr(start, end == std::string::npos ? std::string::npos : end - start);
            if (t->is_object() && t->contains(sel)) {
                t = &t->at(sel);
            } else if (t->is_array() && !sel.empty() && sel.size() < 10 &&
                       sel.find_first_not_of("0123456789") == std::string::npos && std::stoul(sel) < t->size()) {
                t = &t->at((size_t)std::stoul(sel));
            } else {
                refuse("json_schema: $ref \"" + ref + "\" at " + path + " does not resolve (\"" + sel + "\" not found)");
            }
            if (end == std::string::npos) break;
            start = end + 1;
        }
        return t;
    }

    void check_ref(const common_json &value, const std::string &path) {
        if (!value.is_string()) refuse("json_schema: $ref at " + path + " must be a string");
        std::string ref = value.get<std::string>();
        refs.insert(ref);
        if (refs.size() > kMaxRefs)
            refuse("json_schema has more than " + std::to_string(kMaxRefs) + " distinct $refs");
        // A chain of bare $refs must reach a schema (a cycle of them has none).
        std::set<std::string> seen{ref};
        const common_json *t = resolve(ref, path);
        while (t->is_object() && t->contains("$ref") && t->at("$ref").is_string()) {
            std::string next = t->at("$ref").get<std::string>();
            if (!seen.insert(next).second)
                refuse("json_schema: $ref \"" + ref + "\" at " + path + " is a cycle of $refs with no schema in it");
            t = resolve(next, path);
        }
    }

    static void count(const common_json &s, const char *key, const std::string &path) {
        if (!s.contains(key)) return;
        const common_json &v = s.at(key);
        if (!v.is_number_integer())
            refuse(std::string("json_schema: ") + key + " at " + path + " must be a non-negative integer");
        double d = v.get<double>();
        if (d < 0 || d > (double)kMaxCount)
            refuse(std::string("json_schema: ") + key + " = " + v.dump() + " at " + path + " is out of range: use 0.." +
                   std::to_string(kMaxCount));
    }

    static double bound(const common_json &s, const char *key, const std::string &path) {
        const common_json &v = s.at(key);
        if (!v.is_number()) refuse(std::string("json_schema: ") + key + " at " + path + " must be a number");
        double d = v.get<double>();
        if (!std::isfinite(d) || std::fabs(d) > kMaxBound)
            refuse(std::string("json_schema: ") + key + " = " + v.dump() + " at " + path +
                   " is out of range: use a number with |x| <= 2^53");
        return d;
    }

    void literal(const common_json &v) {
        literal_bytes += v.dump().size();
        if (literal_bytes > kMaxLiteralBytes)
            refuse("json_schema: enum/const literals exceed " + std::to_string(kMaxLiteralBytes) + " bytes in all");
    }

    // Returns the subschemas the converter builds for `s` (with "type" arrays, once per type).
    void walk(const common_json &s, const std::string &path, long mult) {
        if (!s.is_object()) return;  // booleans etc.: the converter says what it accepts
        long m = mult;
        if (s.contains("type") && s.at("type").is_array()) m *= std::max<long>(1, (long)s.at("type").size());
        nodes += m;
        if (m > kMaxNodes || nodes > kMaxNodes)
            refuse("json_schema expands to more than " + std::to_string(kMaxNodes) +
                   " subschemas (\"type\" arrays copy their schema once per type)");
        if (s.contains("$ref")) check_ref(s.at("$ref"), path);
        for (const char *k : {"minItems", "maxItems", "minLength", "maxLength"}) count(s, k, path);
        double lo = -INFINITY, hi = INFINITY;
        if (s.contains("minimum")) lo = bound(s, "minimum", path);
        if (s.contains("exclusiveMinimum")) lo = std::max(lo, bound(s, "exclusiveMinimum", path));
        if (s.contains("maximum")) hi = bound(s, "maximum", path);
        if (s.contains("exclusiveMaximum")) hi = std::min(hi, bound(s, "exclusiveMaximum", path));
        if (lo > hi) refuse("json_schema: minimum > maximum at " + path);
        if (s.contains("minItems") && s.contains("maxItems") &&
            s.at("minItems").get<double>() > s.at("maxItems").get<double>())
            refuse("json_schema: minItems > maxItems at " + path);
        if (s.contains("minLength") && s.contains("maxLength") &&
            s.at("minLength").get<double>() > s.at("maxLength").get<double>())
            refuse("json_schema: minLength > maxLength at " + path);
        if (s.contains("pattern")) {
            const common_json &p = s.at("pattern");
            if (!p.is_string()) refuse("json_schema: pattern at " + path + " must be a string");
            if (p.get<std::string>().size() > kMaxPatternBytes)
                refuse("json_schema: pattern at " + path + " is longer than " + std::to_string(kMaxPatternBytes) +
                       " bytes");
        }
        if (s.contains("enum")) {
            const common_json &e = s.at("enum");
            if (e.is_array()) {
                if (e.size() > kMaxEnumValues)
                    refuse("json_schema: enum at " + path + " has " + std::to_string(e.size()) + " values (at most " +
                           std::to_string(kMaxEnumValues) + ")");
                for (size_t i = 0; i < e.size(); i++) literal(e.at(i));
            }
        }
        if (s.contains("const")) literal(s.at("const"));
        if (s.contains("required") && s.at("required").is_array() && s.at("required").size() > kMaxProperties)
            refuse("json_schema: required at " + path + " lists more than " + std::to_string(kMaxProperties) +
                   " names");
        for (const char *k : {"properties", "$defs", "definitions"}) {
            if (!s.contains(k) || !s.at(k).is_object()) continue;
            const common_json &props = s.at(k);
            if (props.size() > kMaxProperties)
                refuse(std::string("json_schema: ") + k + " at " + path + " has " + std::to_string(props.size()) +
                       " entries (at most " + std::to_string(kMaxProperties) + ")");
            for (auto it = props.begin(); it != props.end(); ++it)
                walk(*it, path + "/" + k + "/" + it.key(), m);
        }
        for (const char *k : {"additionalProperties", "items", "not"})
            if (s.contains(k)) {
                const common_json &v = s.at(k);
                if (v.is_array()) {
                    for (size_t i = 0; i < v.size(); i++) walk(v.at(i), path + "/" + k + "/" + std::to_string(i), m);
                } else {
                    walk(v, path + "/" + k, m);
                }
            }
        for (const char *k : {"prefixItems", "anyOf", "oneOf", "allOf"})
            if (s.contains(k) && s.at(k).is_array()) {
                const common_json &v = s.at(k);
                if (v.size() > kMaxProperties)
                    refuse(std::string("json_schema: ") + k + " at " + path + " has more than " +
                           std::to_string(kMaxProperties) + " entries");
                for (size_t i = 0; i < v.size(); i++) walk(v.at(i), path + "/" + k + "/" + std::to_string(i), m);
            }
    }
};

// GBNF: group nesting (the parser recurses per '(') and the text size, before llama.cpp parses it.
void check_gbnf_text(const std::string &g) {
    int depth = 0;
    for (size_t i = 0; i < g.size(); i++) {
        char c = g[i];
        if (c == '"' || c == '[') {  // a literal or a character class: skip to its end
            char close = c == '"' ? '"' : ']';
            for (i++; i < g.size() && g[i] != close; i++)
                if (g[i] == '\\') i++;
        } else if (c == '#') {
            while (i < g.size() && g[i] != '\n') i++;
        } else if (c == '(') {
            if (++depth > kMaxGroupDepth)
                refuse("grammar nests groups deeper than " + std::to_string(kMaxGroupDepth) + " levels (at byte " +
                       std::to_string(i) + ")");
        } else if (c == ')') {
            depth--;
        }
    }
}

std::string convert_schema(const std::string &text) {
    check_json_depth(text);
    common_json schema;
    try {
        schema = common_json::parse(text);
    } catch (const std::exception &e) {
        refuse(std::string("json_schema is not valid JSON: ") + e.what());
    }
    if (!schema.is_object()) refuse("json_schema must be a JSON object");
    SchemaCheck(schema).walk(schema, "#", 1);
    std::string g;
    try {
        g = json_schema_to_grammar(schema, /* force_gbnf */ true);
    } catch (const std::exception &e) {
        refuse(std::string("json_schema: ") + e.what());
    }
    if (g.size() > kMaxGrammarOut)
        refuse("json_schema converts to a grammar of " + std::to_string(g.size()) + " bytes (at most " +
               std::to_string(kMaxGrammarOut) + ")");
    return g;
}

// Runs `fn` on a thread with a large stack (the converter and llama.cpp's grammar parser recurse)
// and rethrows what it threw.
template <typename F>
void on_big_stack(F &&fn) {
    struct Job {
        F *fn;
        std::exception_ptr err;
    } job{&fn, nullptr};
    auto tramp = [](void *arg) -> void * {
        Job *j = static_cast<Job *>(arg);
        try {
            (*j->fn)();
        } catch (...) {
            j->err = std::current_exception();
        }
        return nullptr;
    };
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, kWorkerStack);
    pthread_t th;
    int rc = pthread_create(&th, &attr, tramp, &job);
    pthread_attr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("cannot start the grammar worker thread");
    pthread_join(th, nullptr);
    if (job.err) std::rethrow_exception(job.err);
}

}  // namespace

namespace fe {

double thread_cpu_ms() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

fe_status check_grammar_params(const fe_sampling_params &p) {
    if (p.grammar && p.json_schema)
        return set_error(FE_ERR_INVALID_ARG, "grammar and json_schema: set at most one of them");
    if (p.grammar && strnlen(p.grammar, FE_GRAMMAR_MAX_BYTES + 1) > FE_GRAMMAR_MAX_BYTES)
        return set_error(FE_ERR_INVALID_ARG, "grammar is longer than %u bytes", FE_GRAMMAR_MAX_BYTES);
    if (p.json_schema && strnlen(p.json_schema, FE_GRAMMAR_MAX_BYTES + 1) > FE_GRAMMAR_MAX_BYTES)
        return set_error(FE_ERR_INVALID_ARG, "json_schema is longer than %u bytes", FE_GRAMMAR_MAX_BYTES);
    return FE_OK;
}

fe_status make_grammar(const llama_vocab *vocab, const char *grammar, const char *json_schema, llama_sampler **out) {
    *out = nullptr;
    if (!grammar && !json_schema) return FE_OK;
    std::string reason;
    llama_sampler *smpl = nullptr;
    try {
        on_big_stack([&] {
            std::string gbnf;
            if (json_schema) {
                check_size("json_schema", json_schema);
                gbnf = convert_schema(json_schema);
            } else {
                check_size("grammar", grammar);
                gbnf = grammar;
            }
            check_gbnf_text(gbnf);
            if (!vocab) return;
            clear_llama_errors();
            smpl = llama_sampler_init_grammar(vocab, gbnf.c_str(), "root");
            if (!smpl) {
                reason = take_llama_errors();
                if (reason.empty()) reason = "failed to parse grammar";
            }
        });
    } catch (const Refused &e) {
        return set_error(FE_ERR_INVALID_ARG, "%s", e.what());
    } catch (const std::bad_alloc &) {
        return set_error(FE_ERR_OUT_OF_MEMORY, "out of memory while building the grammar");
    } catch (const std::exception &e) {
        return set_error(FE_ERR_INVALID_ARG, "%s: %s", json_schema ? "json_schema" : "grammar", e.what());
    }
    if (vocab && !smpl) {
        while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) reason.pop_back();
        return set_error(FE_ERR_INVALID_ARG, "%s rejected by llama.cpp's grammar parser: %s%s",
                         json_schema ? "json_schema: its grammar was" : "grammar was",
                         reason.c_str(), json_schema ? "" : " (the parser prints the position to stderr)");
    }
    *out = smpl;
    return FE_OK;
}

namespace {
bool allowed(llama_sampler *grammar, llama_token id) {
    llama_token_data one{id, 0.0f, 0.0f};
    llama_token_data_array arr{&one, 1, -1, false};
    llama_sampler_apply(grammar, &arr);
    return one.logit != -INFINITY;
}

int32_t best_of(const llama_token_data_array &arr) {
    int32_t best = -1;
    for (size_t i = 0; i < arr.size; i++)
        if (arr.data[i].logit != -INFINITY && (best < 0 || arr.data[i].logit > arr.data[best].logit)) best = (int32_t)i;
    return best;
}
}  // namespace

fe_status sample_constrained(llama_context *ctx, int32_t idx, llama_sampler *chain, llama_sampler *grammar,
                             bool greedy, int32_t n_vocab, std::vector<llama_token_data> &cur, llama_token *out) {
    const float *row = llama_get_logits_ith(ctx, idx);
    if (!row) return set_error(FE_ERR_DECODE, "llama.cpp returned no logits");
    cur.resize((size_t)n_vocab);
    llama_token_data_array arr{cur.data(), (size_t)n_vocab, -1, false};
    auto fill = [&] {
        for (int32_t i = 0; i < n_vocab; i++) cur[i] = llama_token_data{i, row[i], 0.0f};
        arr = llama_token_data_array{cur.data(), (size_t)n_vocab, -1, false};
    };
    auto dead_end = [] {
        return set_error(FE_ERR_INVALID_ARG,
                         "grammar: no token of the vocabulary can continue the output here (the grammar needs "
                         "text this model's tokens cannot spell)");
    };
    llama_token id;
    if (greedy) {
        if (!chain) {
            id = argmax(row, n_vocab);
        } else {
            fill();
            llama_sampler_apply(chain, &arr);
            id = arr.data[arr.selected].id;
        }
        if (!allowed(grammar, id)) {
            fill();
            llama_sampler_apply(grammar, &arr);
            if (best_of(arr) < 0) return dead_end();
            if (chain) {
                llama_sampler_apply(chain, &arr);
                id = arr.data[arr.selected].id;
            } else {
                id = arr.data[best_of(arr)].id;
            }
        }
    } else {
        fill();
        llama_sampler_apply(grammar, &arr);
        if (best_of(arr) < 0) return dead_end();
        llama_sampler_apply(chain, &arr);
        id = arr.data[arr.selected].id;
    }
    if (chain) llama_sampler_accept(chain, id);
    *out = id;
    return FE_OK;
}

}  // namespace fe

extern "C" {

fe_status fe_json_schema_to_grammar(const char *json_schema, char *buf, size_t buf_size, size_t *n_out) {
    return fe::guard("fe_json_schema_to_grammar", [&]() -> fe_status {
        fe::clear_error();
        if (!json_schema || !n_out || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_json_schema_to_grammar: NULL argument");
        std::string g;
        try {
            on_big_stack([&] {
                check_size("json_schema", json_schema);
                g = convert_schema(json_schema);
            });
        } catch (const Refused &e) {
            return fe::set_error(FE_ERR_INVALID_ARG, "%s", e.what());
        } catch (const std::bad_alloc &) {
            throw;
        } catch (const std::exception &e) {
            return fe::set_error(FE_ERR_INVALID_ARG, "json_schema: %s", e.what());
        }
        *n_out = g.size();
        if (g.size() + 1 > buf_size) {
            if (buf_size > 0) buf[0] = '\0';
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "the grammar needs %zu bytes", g.size() + 1);
        }
        memcpy(buf, g.c_str(), g.size() + 1);
        return FE_OK;
    });
}

fe_status fe_grammar_check(const fe_model *model, const char *grammar, const char *json_schema) {
    return fe::guard("fe_grammar_check", [&]() -> fe_status {
        fe::clear_error();
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_grammar_check: model is NULL");
        if (!grammar && !json_schema)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_grammar_check: give a grammar or a json_schema");
        fe_sampling_params p = fe_sampling_default_params();
        p.grammar = grammar;
        p.json_schema = json_schema;
        fe_status st = fe::check_grammar_params(p);
        if (st != FE_OK) return st;
        llama_sampler *smpl = nullptr;
        st = fe::make_grammar(model->vocab, grammar, json_schema, &smpl);
        if (smpl) llama_sampler_free(smpl);
        return st;
    });
}

}  // extern "C"
