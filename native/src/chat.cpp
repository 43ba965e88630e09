// Chat prompts: the model's Jinja chat template rendered by llama.cpp's C++ Jinja engine
// (common/jinja), so every binding produces the same bytes. A template is untrusted input:
// the engine has no file or process access, and the checks below bound its work.
#include "internal.h"

#include "jinja/lexer.h"
#include "jinja/parser.h"
#include "jinja/runtime.h"
#include "jinja/value.h"

#include <chrono>
#include <climits>
#include <cstring>

namespace fe {

struct ChatTemplate {
    std::string source;
    jinja::program prog;
    std::string bos, eos;
};

namespace {

// Bounds of one render (a real chat template needs a tiny fraction of each).
constexpr size_t kMaxSourceBytes = 256 * 1024;
constexpr long kMaxSteps = 2'000'000;          // statements run + items iterated
constexpr int kMaxCallDepth = 64;              // nested macro/function calls
constexpr size_t kMaxStringBytes = 8u << 20;   // any string the template builds
constexpr int64_t kMaxRange = 100'000;
constexpr size_t kMaxStringParts = 1u << 17;   // pieces of one string (concatenation keeps them)         // elements of one range()
constexpr double kMaxSeconds = 1.0;

struct Budget {
    long steps = 0;
    int depth = 0;
    size_t output = 0;
    std::chrono::steady_clock::time_point deadline;
    std::vector<size_t> operand_sizes;  // string sizes of pending `*` left operands
};
thread_local Budget *g_budget = nullptr;

[[noreturn]] void over(const char *what) {
    throw std::runtime_error(std::string("the chat template exceeds its bound on ") + what);
}

void tick(long n = 1) {
    Budget *b = g_budget;
    if (!b) return;
    b->steps += n;
    if (b->steps > kMaxSteps) over("work (more than 2,000,000 steps)");
    if ((b->steps & 255) == 0 && std::chrono::steady_clock::now() > b->deadline) over("time (1 s)");
}

size_t value_size(const jinja::value &v) {
    if (jinja::is_val<jinja::value_string>(v)) return v->val_str.length();
    if (jinja::is_val<jinja::value_array>(v)) return v->as_array().size();
    if (jinja::is_val<jinja::value_object>(v)) return v->as_ordered_object().size();
    return 0;
}

void check_result(const jinja::value &v) {
    if (!jinja::is_val<jinja::value_string>(v)) return;
    if (v->val_str.parts.size() > kMaxStringParts) over("string size (131,072 pieces)");
    if (v->val_str.length() > kMaxStringBytes) over("string size (8 MiB)");
}

// Wrappers put around nodes of the parsed program. Each delegates to the node it wraps.
struct Metered : jinja::expression {  // any expression: counts, checks the size of its result
    jinja::statement_ptr inner;
    explicit Metered(jinja::statement_ptr &&p) : inner(std::move(p)) { pos = inner->pos; }
    std::string type() const override { return inner->type(); }
    jinja::value execute_impl(jinja::context &ctx) const override {
        tick();
        jinja::value v = inner->execute(ctx);
        check_result(v);
        return v;
    }
};

struct MeteredStatement : jinja::statement {  // a statement in a block body
    jinja::statement_ptr inner;
    explicit MeteredStatement(jinja::statement_ptr &&p) : inner(std::move(p)) { pos = inner->pos; }
    std::string type() const override { return inner->type(); }
    jinja::value execute_impl(jinja::context &ctx) const override {
        tick();
        jinja::value v = inner->execute(ctx);
        if (g_budget && jinja::is_val<jinja::value_string>(v)) {
            g_budget->output += value_size(v);  // text and {{ }} output: leaves, counted once
            if (g_budget->output > kMaxStringBytes) over("output size (8 MiB)");
        }
        return v;
    }
};

struct MeteredIterable : jinja::expression {  // a for loop's iterable: its length is charged up front
    jinja::statement_ptr inner;
    explicit MeteredIterable(jinja::statement_ptr &&p) : inner(std::move(p)) { pos = inner->pos; }
    std::string type() const override { return inner->type(); }
    jinja::value execute_impl(jinja::context &ctx) const override {
        jinja::value v = inner->execute(ctx);
        tick((long)value_size(v) + 1);
        return v;
    }
};

struct MeteredCall : jinja::expression {  // a call: depth of nested calls
    jinja::statement_ptr inner;
    explicit MeteredCall(jinja::statement_ptr &&p) : inner(std::move(p)) { pos = inner->pos; }
    std::string type() const override { return inner->type(); }
    jinja::value execute_impl(jinja::context &ctx) const override {
        Budget *b = g_budget;
        if (b && ++b->depth > kMaxCallDepth) {
            b->depth--;
            over("call depth (64 nested calls)");
        }
        struct Leave {
            Budget *b;
            ~Leave() {
                if (b) b->depth--;
            }
        } leave{b};
        tick();
        jinja::value v = inner->execute(ctx);
        check_result(v);
        return v;
    }
};

// `s * n` repeats a string n times in one step: check the size before it is built.
struct RepeatLeft : jinja::expression {
    jinja::statement_ptr inner;
    explicit RepeatLeft(jinja::statement_ptr &&p) : inner(std::move(p)) { pos = inner->pos; }
    std::string type() const override { return inner->type(); }
    jinja::value execute_impl(jinja::context &ctx) const override {
        jinja::value v = inner->execute(ctx);
        if (g_budget) g_budget->operand_sizes.push_back(jinja::is_val<jinja::value_string>(v) ? value_size(v) : 1);
        return v;
    }
};
struct RepeatRight : jinja::expression {
    jinja::statement_ptr inner;
    explicit RepeatRight(jinja::statement_ptr &&p) : inner(std::move(p)) { pos = inner->pos; }
    std::string type() const override { return inner->type(); }
    jinja::value execute_impl(jinja::context &ctx) const override {
        jinja::value v = inner->execute(ctx);
        Budget *b = g_budget;
        size_t left = 1;
        if (b && !b->operand_sizes.empty()) {
            left = b->operand_sizes.back();
            b->operand_sizes.pop_back();
        }
        size_t unit = std::max<size_t>(left, jinja::is_val<jinja::value_string>(v) ? value_size(v) : 1);
        if (jinja::is_val<jinja::value_int>(v)) {
            int64_t n = v->as_int();
            if (n > 0 && (double)n * (double)std::max<size_t>(unit, 1) > (double)kMaxStringBytes)
                over("string size (8 MiB)");
            tick(n > 0 ? (long)std::min<int64_t>(n, kMaxSteps) : 1);
        }
        return v;
    }
};

// The rewrite: every statement of a block body counts one step, every expression in a value
// position is metered, a for loop's iterable is charged its length, calls are depth-counted
// and `*` operands are checked. Nodes the engine inspects by type (loop variables, assignees,
// macro parameters, keyword arguments, filter and test names) are left as they are.
void value_pos(jinja::statement_ptr &p);
void body(jinja::statements &v);

void call_args(jinja::statements &args) {
    using namespace jinja;
    for (auto &a : args) {
        if (auto *kw = dynamic_cast<keyword_argument_expression *>(a.get())) value_pos(kw->val);
        else if (auto *sp = dynamic_cast<spread_expression *>(a.get())) value_pos(sp->argument);
        else value_pos(a);
    }
}

void filter_node(jinja::statement_ptr &f) {  // `| name` or `| name(args)`: the node stays
    if (auto *c = dynamic_cast<jinja::call_expression *>(f.get())) call_args(c->args);
}

// Rewrites the children of node `p`; returns true when `p` may itself be wrapped.
bool children(jinja::statement_ptr &p) {
    using namespace jinja;
    statement *n = p.get();
    if (auto *f = dynamic_cast<for_statement *>(n)) {
        statement_ptr *it = &f->iterable;
        if (auto *sel = dynamic_cast<select_expression *>(f->iterable.get())) it = &sel->lhs;
        value_pos(*it);
        *it = std::make_unique<MeteredIterable>(std::move(*it));
        body(f->body);
        body(f->default_block);
    } else if (auto *i = dynamic_cast<if_statement *>(n)) {
        value_pos(i->test);
        body(i->body);
        body(i->alternate);
    } else if (auto *st = dynamic_cast<set_statement *>(n)) {
        value_pos(st->val);
        body(st->body);
    } else if (auto *m = dynamic_cast<macro_statement *>(n)) {
        body(m->body);
    } else if (auto *cs = dynamic_cast<call_statement *>(n)) {
        filter_node(cs->call);
        body(cs->body);
    } else if (auto *fs = dynamic_cast<filter_statement *>(n)) {
        filter_node(fs->filter);
        body(fs->body);
    } else if (auto *me = dynamic_cast<member_expression *>(n)) {
        value_pos(me->object);
    } else if (auto *c = dynamic_cast<call_expression *>(n)) {
        call_args(c->args);
    } else if (auto *al = dynamic_cast<array_literal *>(n)) {
        for (auto &v : al->val) value_pos(v);
    } else if (auto *tl = dynamic_cast<tuple_literal *>(n)) {
        for (auto &v : tl->val) value_pos(v);
    } else if (auto *ol = dynamic_cast<object_literal *>(n)) {
        for (auto &kv : ol->val) value_pos(kv.second);
    } else if (auto *b = dynamic_cast<binary_expression *>(n)) {
        value_pos(b->left);
        value_pos(b->right);
        if (b->op.value == "*") {
            b->left = std::make_unique<RepeatLeft>(std::move(b->left));
            b->right = std::make_unique<RepeatRight>(std::move(b->right));
        }
    } else if (auto *fe = dynamic_cast<filter_expression *>(n)) {
        value_pos(fe->operand);
        filter_node(fe->filter);
    } else if (auto *se = dynamic_cast<select_expression *>(n)) {
        value_pos(se->lhs);
    } else if (auto *te = dynamic_cast<test_expression *>(n)) {
        value_pos(te->operand);
    } else if (auto *u = dynamic_cast<unary_expression *>(n)) {
        value_pos(u->argument);
    } else if (auto *sl = dynamic_cast<slice_expression *>(n)) {
        value_pos(sl->start_expr);
        value_pos(sl->stop_expr);
        value_pos(sl->step_expr);
    } else if (auto *tx = dynamic_cast<ternary_expression *>(n)) {
        value_pos(tx->condition);
        value_pos(tx->true_expr);
        value_pos(tx->false_expr);
    } else if (dynamic_cast<keyword_argument_expression *>(n) || dynamic_cast<spread_expression *>(n)) {
        return false;
    }
    return true;
}

void value_pos(jinja::statement_ptr &p) {
    if (!p) return;
    if (!children(p) || !dynamic_cast<jinja::expression *>(p.get())) return;
    if (dynamic_cast<jinja::call_expression *>(p.get())) p = std::make_unique<MeteredCall>(std::move(p));
    else p = std::make_unique<Metered>(std::move(p));
}

void body(jinja::statements &v) {
    for (auto &p : v) {
        if (!p) continue;
        children(p);
        if (dynamic_cast<jinja::call_expression *>(p.get())) p = std::make_unique<MeteredCall>(std::move(p));
        p = std::make_unique<MeteredStatement>(std::move(p));
    }
}

// range() with a size bound (context variables shadow the engine's builtins).
jinja::value bounded_range(const jinja::func_args &args) {
    for (size_t i = 0; i < args.count(); i++) {
        jinja::value a = args.get_pos(i);
        if (jinja::is_val<jinja::value_int>(a) && (a->as_int() > kMaxRange || a->as_int() < -kMaxRange))
            over("range() size (100,000)");
    }
    jinja::value v = jinja::global_builtins().at("range")(args);
    tick((long)value_size(v));
    return v;
}

std::string piece_of(const llama_vocab *vocab, llama_token t) {
    return t >= 0 ? token_piece(vocab, t, true) : std::string();
}

}  // namespace

namespace {
// The parser recurses on nesting (brackets, blocks, unary operators): bound it before parsing,
// so that no template can exhaust the stack.
void check_nesting(const jinja::lexer_result &lexed) {
    constexpr int kMaxDepth = 64;
    int brackets = 0, blocks = 0, unary = 0;
    bool after_open_statement = false;
    for (const auto &t : lexed.tokens) {
        using T = jinja::token;
        switch (t.t) {
            case T::open_paren:
            case T::open_square_bracket:
            case T::open_curly_bracket: brackets++; break;
            case T::close_paren:
            case T::close_square_bracket:
            case T::close_curly_bracket: brackets--; break;
            default: break;
        }
        if (after_open_statement && t.t == T::identifier) {
            const std::string &k = t.value;
            if (k == "if" || k == "for" || k == "macro" || k == "call" || k == "filter") blocks++;
            else if (k == "endif" || k == "endfor" || k == "endmacro" || k == "endcall" || k == "endfilter") blocks--;
        }
        after_open_statement = t.t == T::open_statement;
        bool is_unary = t.t == T::unary_operator || t.t == T::additive_binary_operator ||
                        (t.t == T::identifier && t.value == "not");
        unary = is_unary ? unary + 1 : 0;
        if (brackets > kMaxDepth || blocks > kMaxDepth || unary > kMaxDepth)
            throw std::runtime_error("the chat template nests deeper than 64 levels (brackets, blocks or operators)");
    }
}

std::shared_ptr<ChatTemplate> parse_source(const std::string &source) {
    if (source.size() > kMaxSourceBytes)
        throw std::runtime_error("the chat template is " + std::to_string(source.size()) +
                                 " bytes; the bound is 256 KiB");
    auto t = std::make_shared<ChatTemplate>();
    jinja::lexer lexer;
    jinja::lexer_result lexed = lexer.tokenize(source);
    check_nesting(lexed);
    t->prog = jinja::parse_from_tokens(lexed);
    t->source = lexed.source;
    body(t->prog.body);
    return t;
}
}  // namespace

std::shared_ptr<ChatTemplate> parse_standalone(const std::string &source) { return parse_source(source); }

std::shared_ptr<const ChatTemplate> parse_chat_template(const std::string &source, const fe_model *model) {
    auto t = parse_source(source);
    t->bos = piece_of(model->vocab, llama_vocab_bos(model->vocab));
    t->eos = piece_of(model->vocab, llama_vocab_eos(model->vocab));
    return t;
}

fe_status render_template(const ChatTemplate *t, const fe_chat_message *messages, size_t n, bool add_assistant,
                          std::string &out) {
    if (n > 0 && !messages) return set_error(FE_ERR_INVALID_ARG, "messages is NULL");
    jinja::context ctx(t->source);
    auto msgs = jinja::mk_val<jinja::value_array>();
    for (size_t i = 0; i < n; i++) {
        if (!messages[i].role || !messages[i].content)
            return set_error(FE_ERR_INVALID_ARG, "message %zu has a NULL role or content", i);
        auto m = jinja::mk_val<jinja::value_object>();
        m->insert("role", jinja::mk_val<jinja::value_string>(std::string(messages[i].role)));
        m->insert("content", jinja::mk_val<jinja::value_string>(std::string(messages[i].content)));
        msgs->push_back(m);
    }
    ctx.set_val("messages", msgs);
    ctx.set_val("bos_token", jinja::mk_val<jinja::value_string>(t->bos));
    ctx.set_val("eos_token", jinja::mk_val<jinja::value_string>(t->eos));
    ctx.set_val("add_generation_prompt", jinja::mk_val<jinja::value_bool>(add_assistant));
    ctx.set_val("range", jinja::mk_val<jinja::value_func>("range", bounded_range));
    Budget budget;
    budget.deadline = std::chrono::steady_clock::now() +
                      std::chrono::microseconds((long long)(kMaxSeconds * 1e6));
    g_budget = &budget;
    struct Reset {
        ~Reset() { g_budget = nullptr; }
    } reset;
    try {
        jinja::runtime runtime(ctx);
        jinja::value result = runtime.execute(t->prog);
        auto parts = jinja::runtime::gather_string_parts(result);
        out = parts->as_string().str();
    } catch (const std::bad_alloc &) {
        return set_error(FE_ERR_TEMPLATE, "the chat template ran out of memory");
    } catch (const std::exception &e) {
        return set_error(FE_ERR_TEMPLATE, "the chat template failed: %s", e.what());
    }
    if (out.size() > kMaxStringBytes) return set_error(FE_ERR_TEMPLATE, "the chat template's output exceeds 8 MiB");
    return FE_OK;
}

fe_status render_chat(const fe_model *model, const fe_chat_message *messages, size_t n, bool add_assistant,
                      std::string &out) {
    if (!model) return set_error(FE_ERR_INVALID_ARG, "model is NULL");
    std::shared_ptr<const ChatTemplate> t = model->chat;
    if (!t)
        return set_error(FE_ERR_TEMPLATE, "%s", model->chat_error.empty()
                                                    ? "the model has no chat template (tokenizer.chat_template); "
                                                      "format the prompt yourself and call fe_generate"
                                                    : model->chat_error.c_str());
    return render_template(t.get(), messages, n, add_assistant, out);
}

fe_status copy_out(const std::string &out, char *buf, size_t buf_size, size_t *n_out, const char *what) {
    *n_out = out.size();
    if (out.size() >= buf_size)
        return set_error(FE_ERR_BUFFER_TOO_SMALL, "%s: need %zu bytes + NUL, got %zu", what, out.size(), buf_size);
    memcpy(buf, out.data(), out.size());
    buf[out.size()] = '\0';
    return FE_OK;
}

}  // namespace fe

extern "C" {

fe_status fe_chat_format(const fe_model *model, const fe_chat_message *messages, size_t n_messages,
                         bool add_assistant, char *buf, size_t buf_size, size_t *n_out) {
    return fe::guard("fe_chat_format", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!model || !n_out || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_chat_format: NULL argument");
        std::string out;
        fe_status st = fe::render_chat(model, messages, n_messages, add_assistant, out);
        if (st != FE_OK) return st;
        return fe::copy_out(out, buf, buf_size, n_out, "fe_chat_format");
    });
}

fe_status fe_chat_render(const char *template_source, const char *bos_token, const char *eos_token,
                         const fe_chat_message *messages, size_t n_messages, bool add_assistant, char *buf,
                         size_t buf_size, size_t *n_out) {
    return fe::guard("fe_chat_render", [&]() -> fe_status {
        fe::clear_error();
        if (n_out) *n_out = 0;
        if (!template_source || !n_out || (buf_size > 0 && !buf))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_chat_render: NULL argument");
        std::shared_ptr<fe::ChatTemplate> t;
        try {
            t = fe::parse_standalone(template_source);
        } catch (const std::exception &e) {
            return fe::set_error(FE_ERR_TEMPLATE, "the chat template cannot be used: %s", e.what());
        }
        t->bos = bos_token ? bos_token : "";
        t->eos = eos_token ? eos_token : "";
        std::string out;
        fe_status st = fe::render_template(t.get(), messages, n_messages, add_assistant, out);
        if (st != FE_OK) return st;
        return fe::copy_out(out, buf, buf_size, n_out, "fe_chat_render");
    });
}

fe_status fe_model_set_chat_template(fe_model *model, const char *template_source) {
    return fe::guard("fe_model_set_chat_template", [&]() -> fe_status {
        fe::clear_error();
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_model_set_chat_template: model is NULL");
        const char *src = template_source ? template_source : llama_model_chat_template(model->model, nullptr);
        if (!src) {
            model->chat.reset();
            model->chat_error.clear();
            return FE_OK;
        }
        try {
            model->chat = fe::parse_chat_template(src, model);
            model->chat_error.clear();
        } catch (const std::exception &e) {
            std::string why = std::string("the chat template cannot be used: ") + e.what();
            if (template_source) return fe::set_error(FE_ERR_TEMPLATE, "%s", why.c_str());
            model->chat.reset();  // the GGUF's own: remembered, reported when a chat prompt is asked for
            model->chat_error = why;
        }
        return FE_OK;
    });
}

}  // extern "C"
