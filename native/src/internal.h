// Internal declarations shared by the C API sources. Not installed.
#pragma once

#include "finllm_edge.h"
#include "llama.h"
#include "text_stream.h"

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace fe {
struct ChatTemplate;  // chat.cpp: a parsed, checked Jinja chat template
struct ActiveAdapter {  // adapter.cpp: one entry of a session's active set
    fe_adapter *adapter;
    float scale;
};
}

struct fe_model {
    llama_model *model = nullptr;
    const llama_vocab *vocab = nullptr;
    std::string path;
    uint64_t file_size = 0;
    double load_ms = 0.0;
    std::shared_ptr<const fe::ChatTemplate> chat;  // NULL: no template (or it failed to parse)
    std::string chat_error;                        // why `chat` is NULL
    std::vector<fe_adapter *> adapters;            // loaded on this model (adapter.cpp; its mutex)
    std::string declared_sha256;                   // fe_model_set_sha256 (lowercase hex); empty: hash the file
};

// The request in progress on a session (see fe_request_* in finllm_edge.h).
struct fe_request {
    bool active = false;
    bool prefilled = false;
    bool need_decode = false;       // `last` was sampled but not yet fed back
    fe_generate_params gp{};
    std::vector<std::string> stops; // owned copies of gp.stop
    std::vector<llama_token> prompt;
    llama_sampler *sampler = nullptr;  // NULL: greedy argmax fast path
    llama_sampler *grammar = nullptr;  // grammar / JSON Schema constraint (grammar.cpp), NULL: none
    std::vector<llama_token_data> candidates;  // scratch of constrained sampling
    std::string grammar_src, schema_src;       // owned copies of gp.sampling.grammar / json_schema
    bool has_grammar = false, has_schema = false;
    llama_token last = -1;
    int32_t n_gen = 0;
    int32_t n_past = 0;
    int32_t n_reused = 0;           // prompt tokens kept from the KV cache (prefix reuse)
    double t_start = 0, t_tokenized = 0, prefill_ms = 0, ttft = 0, t_prev = 0;
    std::unique_ptr<fe::TextStream> text;
    std::string event_text;
    fe_stop_reason reason = FE_STOP_NONE;
    const fe_chat_message *chat = nullptr;  // fe_request_start_chat's messages, during the start only (drift)
    size_t n_chat = 0;
};

struct fe_session {
    fe_model *model = nullptr;
    llama_context *ctx = nullptr;
    fe_session_params params{};
    std::atomic<bool> cancel{false};
    fe_request req;
    // Exactly the tokens whose K/V are in the cache (sequence 0, positions 0..n-1): prompt
    // tokens and decoded generated tokens. Whenever in doubt it is truncated or cleared.
    std::vector<llama_token> cached;
    // Leading cached tokens whose K/V a fresh prefill would reproduce bit for bit: the reusable
    // ones. They all came from prompt batches on one kernel path, `exact_path` (fe::RowPath);
    // a token decoded alone, and every token after it, is not among them.
    int32_t n_exact = 0;
    uint8_t exact_path = 0;
    std::vector<double> token_ms;         // per-token latencies of the last request
    fe_profile profile{};
    fe_drift_monitor *drift = nullptr;    // fe_session_enable_drift (drift_monitor.cpp); owned
    std::vector<fe::ActiveAdapter> adapters;  // the active LoRA set (adapter.cpp), scale != 0
};

namespace fe {

// errors.cpp: thread-local last error. set_error returns `status` for `return set_error(...)`.
fe_status set_error(fe_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void clear_error();
// llama.cpp error lines logged on this thread since the last clear (see logging.cpp).
std::string take_llama_errors();
void clear_llama_errors();

// logging.cpp: installs the llama.cpp/ggml log bridge once; idempotent and thread-safe.
void ensure_backend();
void log(fe_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// drift_monitor.cpp: the one rule for what a request adds to a drift monitor (a chat: its last
// user message; a prompt: its non-control tokens after a prefix of >= 16 shared with the previous
// request's prompt); no-op without a monitor. Takes the monitor's lock.
void drift_count_request(fe_drift_monitor *m, const fe_model *model, const std::vector<llama_token> &prompt,
                         const fe_chat_message *chat, size_t n_chat);
// A new monitor on the reference at `path`, refused when made for another tokenizer than model's.
fe_status drift_monitor_for(const fe_model *model, const char *path, fe_drift_monitor **out);
// drift_monitor.cpp: counts the prompt of a session's request that is starting (skipped for
// max_tokens 0), and frees a session's monitor.
void drift_on_request(fe_session *s);
void drift_detach(fe_session *s);
// generate.cpp: ends the active request of a session (frees its sampler, keeps its profile).
void end_request(fe_session *s, fe_stop_reason reason);
// generate.cpp: empties the KV cache and s->cached.
void forget_cache(fe_session *s);

// generate.cpp: the kernel path a prompt row takes, which decides its K/V bits (see "prefix
// reuse" in finllm_edge.h). Rows are reused only on the path a fresh prefill would take.
enum RowPath : uint8_t {
    ROWS_PLAIN = 0,     // flash attention off, batches of >= 2 tokens
    ROWS_FA_VEC = 1,    // flash attention on, batches of 2..63 tokens (the row-by-row kernel)
    ROWS_FA_TILED = 2,  // flash attention on, batches of >= 64 tokens (ggml's tiled kernel)
};
constexpr int32_t kFaTileRows = 64;  // GGML_FA_TILE_Q of the pinned ggml
// The path of a batch of n rows of one sequence (-1: a lone token, decoded on no prompt path).
int batch_path(bool flash_attn, int32_t n);
// The path a fresh prefill of an n_prompt-token prompt gives every row (a 1-token prompt aside),
// with chunks of at most chunk_limit tokens.
RowPath prompt_path(bool flash_attn, int32_t chunk_limit, int32_t n_prompt);
RowPath prompt_path(const fe_session *s, int32_t n_prompt);
// Size of the next prefill chunk with `left` tokens to go on `path`, at most `limit` tokens: as
// large as allowed, never leaving a last chunk off the path. Sessions and the scheduler chunk
// with it, so a request gives the same bits in either.
int32_t next_chunk(RowPath path, int32_t limit, int32_t left);
// Fewest rows of a prefill chunk on `path` (so: the prompt tokens a reuse evaluates again at least).
int32_t min_rows(RowPath path);
// generate.cpp: tokenizes `text` into `out` (llama_tokenize with a growing buffer).
fe_status tokenize_text(const fe_model *model, const char *text, bool add_special, bool parse_special,
                        std::vector<llama_token> &out);
// generate.cpp: the tokens fe_request_start_chat evaluates for `messages` (add_assistant as given).
fe_status chat_tokens(const fe_model *model, const fe_chat_message *messages, size_t n, bool add_assistant,
                      std::vector<llama_token> &out);
// chat.cpp: parses + checks a template (throws std::runtime_error with the reason).
std::shared_ptr<const ChatTemplate> parse_chat_template(const std::string &source, const fe_model *model);
// chat.cpp: renders messages; FE_OK or FE_ERR_TEMPLATE / FE_ERR_INVALID_ARG (error set).
fe_status render_chat(const fe_model *model, const fe_chat_message *messages, size_t n, bool add_assistant,
                      std::string &out);
// sampling.cpp: the sampler chain of one request's fe_sampling_params (repeat_last_n -1 = n_ctx);
// NULL for plain greedy, whose token is argmax(logits row): the lowest index on ties, as
// llama.cpp's greedy sampler. One implementation for sessions and the scheduler.
llama_sampler *make_sampler(const llama_vocab *vocab, uint32_t n_ctx, const fe_sampling_params &p);
int32_t argmax(const float *row, int32_t n);
// sampling.cpp: bytes of RAM, and of the f16 K and V caches for n_ctx tokens (the budget rule).
double total_ram_bytes();
double kv_cache_bytes(const llama_model *m, uint32_t n_ctx);
// tokens.cpp: text of one token (special tokens rendered when `special`).
std::string token_piece(const llama_vocab *vocab, llama_token tok, bool special);
// tokens.cpp: a request's prompt for a context of n_ctx tokens per request (one rule for sessions
// and the scheduler): at least one token, room for the answer, every token in the vocabulary.
// `owner` names what was created with n_ctx in the messages ("session", "scheduler").
fe_status check_prompt(const fe_model *model, const std::vector<llama_token> &prompt, int32_t n_ctx,
                       const char *owner);
// model.cpp: a llama context of n_seq KV streams of n_ctx cells each (one stream per sequence, so
// each sequence's cells start at 0), with the settings sessions and the scheduler share; NULL
// with the error set (FE_ERR_OUT_OF_MEMORY) when llama.cpp cannot create it.
struct ContextSpec {
    uint32_t n_ctx = 0, n_batch = 0, n_ubatch = 0, n_seq = 1;
    int32_t n_threads = 1, n_threads_batch = 1;
    bool flash_attn = false;
    ggml_abort_callback abort = nullptr;
    void *abort_data = nullptr;
};
llama_context *new_context(const fe_model *model, const ContextSpec &spec);

// Thrown inside the token loop with the error message already set (caught in generate.cpp).
struct Status {
    fe_status status;
};
// adapter.cpp: drops a session's active adapters (session free); orphans a model's adapters (model free).
void session_drop_adapters(fe_session *s);
void model_drop_adapters(fe_model *m);
// model.cpp: the model file's sha256 (64 hex + NUL): the declared one (fe_model_set_sha256) or
// fe_file_sha256 of its path. Errors name the path.
fe_status model_sha256(const fe_model *m, char hex[65]);
// hash_index.cpp: the cross-process index of file hashes (fe_set_hash_index_dir), keyed by the
// real path and the stat stamp. Lookup is false when the index is off, missing or has no match.
struct FileStamp {
    uint64_t dev, ino, size, mtime_ns, ctime_ns;
    bool operator==(const FileStamp &o) const {
        return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns;
    }
};
FileStamp file_stamp(const struct stat &st);
bool hash_index_lookup(const std::string &real_path, const FileStamp &stamp, char hex[65]);
void hash_index_record(const std::string &real_path, const FileStamp &stamp, const char *hex);
// adapter.cpp: hex sha256 naming the session's active adapter set ("" when none), for state files.
std::string adapter_set_id(const fe_session *s);

// metrics.cpp
double now_ms();
double elapsed_ms(double since_ms);
// The one profile of a finished request (sessions and the scheduler): rates and percentiles from
// the times and counts; e2e from t_start; peak RSS now. n_evaluated: prompt tokens evaluated
// (not reused).
struct RequestTimes {
    double load_ms = 0, tokenize_ms = 0, prefill_ms = 0, ttft_ms = 0, t_start = 0;
    int32_t n_prompt = 0, n_evaluated = 0, n_reused = 0, n_gen = 0;
};
fe_profile request_profile(const RequestTimes &t, const std::vector<double> &token_ms);

// Runs `body` and turns any C++ exception into a status + message (the C boundary).
template <typename F>
fe_status guard(const char *where, F &&body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return set_error(FE_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
    } catch (const std::exception &e) {
        return set_error(FE_ERR_INTERNAL, "%s: %s", where, e.what());
    } catch (...) {
        return set_error(FE_ERR_INTERNAL, "%s: unknown C++ exception", where);
    }
}

}  // namespace fe
